"""Batches in UNITER's compact layout, hard-negative mining and training groups.

A batch is built per pair: every row gets its own ``[CLS] ids [SEP]`` and its
own regions right after its own text (``data.collate.layout_tensors``), so
the from-image direction has none of the original's gather-index bug (which
used the length of the group's *last* caption for every row). Images are
stored once per batch and rows point at them with ``img_index``: a
from-image group holds its image once, however many captions it pairs with.

Mining follows the original: the model in eval mode, under ``torch.no_grad()``,
scores the positive and its ``negative_size`` random negatives (here in chunks
of ``inf_minibatch_size`` pairs); the ``hard_neg_size`` highest-scoring
negatives and the positive (row 0) form the training group.
"""

from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from ..data import layout_tensors
from .sampling import DataStore, Prepared

__all__ = ["Group", "build_batch", "to_device", "mine_hard_negatives", "make_group"]


class Group(NamedTuple):
    """One training group: the positive pair (row 0) and its hard negatives.

    Attributes:
        direction: ``"text"`` or ``"image"`` (what the negatives were sampled for).
        batch: model inputs on the device (``model(**batch)``), including
            ``img_index``, ``txt_lens`` and ``num_bbs``.
        captions, images: caption and image index of each row.
        n_scored: pairs scored while mining this group.
    """

    direction: str
    batch: dict
    captions: list
    images: list
    n_scored: int


def build_batch(store: DataStore | Prepared, captions: Sequence[int], images: Sequence[int]) -> dict[str, torch.Tensor]:
    """Model inputs (on the CPU) for the pairs ``(captions[i], images[i])``.

    ``store`` is anything with ``tokens(caption)`` and ``image(image)``: the
    :class:`~.sampling.DataStore` or a :class:`~.sampling.Prepared` item.

    Each distinct image is stored once in ``img_feat``/``img_pos_feat``
    ``(U, R, D)``; ``img_index`` ``(B,)`` points every row at its image.
    """
    if len(captions) != len(images) or not captions:
        raise ValueError(f"need as many captions as images (>= 1), got {len(captions)} and {len(images)}")
    tokens = [store.tokens(c) for c in captions]
    slot: dict[int, int] = {}
    for img in images:
        slot.setdefault(img, len(slot))
    regions = [store.image(img) for img in slot]
    lay = layout_tensors([t.numel() for t in tokens], [regions[slot[img]][0].shape[0] for img in images])
    max_nbb = max(f.shape[0] for f, _ in regions)
    dim = regions[0][0].shape[1]
    img_feat = torch.zeros(len(regions), max_nbb, dim)
    img_pos = torch.zeros(len(regions), max_nbb, 7)
    for u, (feat, boxes) in enumerate(regions):
        img_feat[u, : feat.shape[0]] = feat
        img_pos[u, : boxes.shape[0]] = boxes
    return {
        "input_ids": pad_sequence(tokens, batch_first=True, padding_value=0),
        "position_ids": lay["position_ids"],
        "img_feat": img_feat,
        "img_pos_feat": img_pos,
        "attn_masks": lay["attn_masks"],
        "gather_index": lay["gather_index"],
        "img_index": torch.tensor([slot[img] for img in images], dtype=torch.long),
        "txt_lens": lay["txt_lens"],
        "num_bbs": lay["num_bbs"],
    }


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a batch to ``device`` (pinned, asynchronous copies on CUDA)."""
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def mine_hard_negatives(model: torch.nn.Module, prepared: Prepared, *,
                        hard_neg_size: int, chunk_size: int, device: torch.device,
                        autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> list[int]:
    """Rows of ``candidates`` forming the training group: ``[0]`` + the hardest negatives.

    The model runs in eval mode (no dropout) under ``torch.no_grad()``, on
    ``chunk_size`` pairs at a time; its train/eval mode is restored after.
    Negatives are ordered by decreasing score (ties: lower row first).

    Args:
        model: the bare :class:`~integrations.uniter.model.UniterForRetrieval`
            (not the DDP wrapper: mining involves no gradient and no collective).
        hard_neg_size: negatives kept (fewer if fewer were sampled).
        autocast: a factory of the autocast context (None: full precision).
    """
    candidates = prepared.candidates
    n = len(candidates.captions)
    was_training = model.training
    model.eval()
    logits = []
    try:
        for lo in range(0, n, chunk_size):
            batch = to_device(build_batch(prepared, candidates.captions[lo:lo + chunk_size],
                                          candidates.images[lo:lo + chunk_size]), device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                logits.append(model(**batch).logits.float())
    finally:
        model.train(was_training)
    scores = torch.cat(logits)
    k = min(hard_neg_size, n - 1)
    # stable descending order: ties keep the lower row first, on every platform
    order = torch.sort(scores[1:], descending=True, stable=True).indices[:k] + 1
    return [0] + order.tolist()


def make_group(prepared: Prepared, rows: Sequence[int], device: torch.device) -> Group:
    """The training :class:`Group` made of ``rows`` of the candidates (row 0 = positive)."""
    candidates = prepared.candidates
    captions = [candidates.captions[r] for r in rows]
    images = [candidates.images[r] for r in rows]
    batch = to_device(build_batch(prepared, captions, images), device)
    return Group(candidates.direction, batch, captions, images, len(candidates.captions))
