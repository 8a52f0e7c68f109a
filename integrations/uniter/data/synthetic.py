"""Random txt_db/img_db pairs in the original formats, for tests and benchmarks.

The content is noise (random word pieces, random region features); only the
formats, sizes and caption-image structure are realistic.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from .writer import write_img_db, write_txt_db

__all__ = ["SyntheticDbs", "make_retrieval_dbs", "random_image_record", "BERT_BASE_CASED_META"]

#: ``meta.json`` of the released txt_dbs (bert-base-cased)
BERT_BASE_CASED_META = {"CLS": 101, "SEP": 102, "MASK": 103, "v_range": [106, 28996]}


class SyntheticDbs(NamedTuple):
    """Paths written by :func:`make_retrieval_dbs`."""

    txt_db: str
    img_db: str


def random_image_record(rng: np.random.Generator, n_boxes: int, img_dim: int = 2048,
                        n_classes: int = 1601) -> dict[str, np.ndarray]:
    """One img_db record: ``features``, ``norm_bb``, ``conf`` (descending), ``soft_labels``."""
    x1, y1 = rng.uniform(0, 0.6, n_boxes), rng.uniform(0, 0.6, n_boxes)
    w, h = rng.uniform(0.05, 0.4, n_boxes), rng.uniform(0.05, 0.4, n_boxes)
    norm_bb = np.stack([x1, y1, x1 + w, y1 + h, w, h], axis=1)
    soft = rng.random((n_boxes, n_classes))
    return {
        "features": rng.random((n_boxes, img_dim), dtype=np.float32) * 4,
        "norm_bb": norm_bb,
        "conf": np.sort(rng.random(n_boxes))[::-1].reshape(-1, 1),
        "soft_labels": soft / soft.sum(1, keepdims=True),
    }


def make_retrieval_dbs(root: str | os.PathLike, *, n_images: int, captions_per_image: int = 5,
                       vocab_size: int = 28996, min_words: int = 3, max_words: int = 20,
                       img_dim: int = 2048, boxes: tuple[int, int] = (10, 36),
                       conf_th: float = 0.2, max_bb: int = 100, min_bb: int = 10,
                       compressed: bool = False, seed: int = 0,
                       name: str = "itm_synthetic") -> SyntheticDbs:
    """Write ``<root>/txt_db/<name>.db`` and ``<root>/img_db/<name>/``.

    Args:
        n_images: number of images; captions_per_image: captions of each.
        vocab_size: word pieces are drawn from ``[106, vocab_size)`` (meta.json is
            bert-base-cased's).
        min_words, max_words: caption length range (without ``[CLS]``/``[SEP]``).
        img_dim: region feature width; boxes: ``(low, high)`` rows per image
            (inclusive), at least ``min_bb`` rows kept.
        conf_th, max_bb, min_bb, compressed: the img_db setting and variant.
    """
    if vocab_size <= 106:
        raise ValueError(f"vocab_size must exceed 106 (first regular bert-base-cased id), got {vocab_size}")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    if not max(1, min_bb) <= boxes[0] <= boxes[1]:
        raise ValueError(f"boxes must be (low, high) with min_bb ({min_bb}) <= low <= high, got {boxes}")
    rng = np.random.default_rng(seed)
    root = os.fspath(root)
    images, examples = {}, {}
    for i in range(n_images):
        fname = f"{name}_{i:06d}.npz"
        images[fname] = random_image_record(rng, int(rng.integers(boxes[0], boxes[1] + 1)), img_dim)
        for c in range(captions_per_image):
            n_words = int(rng.integers(min_words, max_words + 1))
            examples[str(i * captions_per_image + c)] = {
                "input_ids": rng.integers(106, vocab_size, n_words).tolist(),
                "img_fname": fname,
            }
    txt_path = os.path.join(root, "txt_db", f"{name}.db")
    img_path = os.path.join(root, "img_db", name)
    write_txt_db(txt_path, examples, BERT_BASE_CASED_META)
    write_img_db(img_path, images, conf_th, max_bb, min_bb, compressed=compressed)
    return SyntheticDbs(txt_path, img_path)
