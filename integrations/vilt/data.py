"""ViLT's data: Karpathy split files, images read with Pillow, and batches built by the ``ViltProcessor``.

- :func:`read_karpathy`: the split file the retrieval literature uses for
  Flickr30k and COCO (``dataset_flickr30k.json``, ``dataset_coco.json``):
  ``{"images": [{"filename", "split", "sentences": [{"raw", "tokens", ...}],
  "filepath"?}, ...]}``; a caption is its ``raw`` text (``tokens`` joined
  when ``raw`` is absent).
- :class:`ViltPairs`: a split as the engine numbers it. A caption decodes to
  its word-piece ids (``[CLS] ... [SEP]``, cut to ``max_text_len``); an image
  to the processor's resize of it (``uint8``, ``(3, h, w)``), so the caches and
  the data workers hold a quarter of what normalised floats would take.
- :class:`ViltCollate`: the batch: ids padded to ``max_text_len`` by the
  tokenizer, each distinct image rescaled, normalised and padded once by the
  image processor (``pixel_values``, ``pixel_mask``), and ``image_index``, the
  image of each row. Resizing first and normalising later gives the very
  tensors one processor call gives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..retrieval.options import read_json_object
from ..retrieval.protocol import DataError, Pairs

__all__ = ["KarpathyImage", "DataFileError", "ImageReadError", "read_karpathy", "open_image", "ViltPairs",
           "ViltCollate"]


class DataFileError(DataError, ValueError):
    """A data file (a Karpathy split file, Winoground's examples) that cannot be used; the message says where."""


class ImageReadError(DataError, ValueError):
    """An image Pillow cannot read; the message names the file (one line, also from a data worker)."""


@dataclass(frozen=True)
class KarpathyImage:
    """One image of a split file: its path below the image root, its split and its captions."""

    path: str
    split: str
    captions: tuple[str, ...]


def _caption(sentence: Any, where: str) -> str:
    if isinstance(sentence, dict) and isinstance(sentence.get("raw"), str) and sentence["raw"].strip():
        return sentence["raw"].strip()
    if isinstance(sentence, dict) and isinstance(sentence.get("tokens"), list) and sentence["tokens"]:
        return " ".join(str(t) for t in sentence["tokens"])
    raise DataFileError(f"{where}: a sentence needs a non-empty 'raw' text or 'tokens' list, got {sentence!r:.80}")


def _entry(item: Any, where: str) -> KarpathyImage:
    if not isinstance(item, dict):
        raise DataFileError(f"{where}: expected an object, got {type(item).__name__}")
    for key, kind in (("filename", str), ("split", str), ("sentences", list)):
        if not isinstance(item.get(key), kind):
            raise DataFileError(f"{where}: key {key!r} must be a {kind.__name__}, got {item.get(key)!r:.80}")
    path = os.path.join(item["filepath"], item["filename"]) if item.get("filepath") else item["filename"]
    captions = tuple(_caption(s, f"{where}, sentence {k}") for k, s in enumerate(item["sentences"]))
    return KarpathyImage(path, item["split"], captions)


def read_karpathy(path: str | os.PathLike) -> list[KarpathyImage]:
    """Every image of a Karpathy split file, in file order.

    Raises ``FileNotFoundError`` for a missing file and :class:`DataFileError`
    (a ``ValueError``) naming the file and the image for anything malformed.
    """
    path = os.fspath(path)
    try:
        data = read_json_object(path, "Karpathy split file")
    except ValueError as err:  # not JSON, or not an object
        raise DataFileError(f"{err} (the Karpathy split layout is an object with an 'images' list)") from None
    if not isinstance(data.get("images"), list):
        raise DataFileError(f"{path}: expected an object with an 'images' list (the Karpathy split layout)")
    return [_entry(item, f"{path}, image {i}") for i, item in enumerate(data["images"])]


def open_image(path: str):
    """The image at ``path`` as an RGB ``PIL.Image``, fully decoded; :class:`ImageReadError` when it cannot be."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from None


class ViltPairs(Pairs):
    """The captions and images of some Karpathy entries, numbered for the engine (one source).

    Args:
        images: the entries, in order; each caption pairs with its entry's image.
        image_root: the folder the entries' paths are relative to; every file
            must exist (``FileNotFoundError`` naming the first missing one).
        processor: a ``ViltProcessor`` (its tokenizer and image processor).
        max_text_len: word pieces per caption with ``[CLS]``/``[SEP]``.
        image_size: the shorter side after the resize (None: the processor's).
        image_cache: decoded images kept (LRU).
        name: what the split is called in messages and results.
    """

    def __init__(self, images: Sequence[KarpathyImage], image_root: str, processor: Any, *, max_text_len: int,
                 image_size: int | None = None, image_cache: int = 1024, name: str = "") -> None:
        if not images:
            raise ValueError(f"split {name!r} has no image")
        self.entries, self.image_root, self.name = list(images), os.fspath(image_root), name
        self.tokenizer, self.image_processor = processor.tokenizer, processor.image_processor
        self.max_text_len = int(max_text_len)
        self.resize = {"size": {"shortest_edge": int(image_size)}} if image_size else {}
        for entry in self.entries:
            if not os.path.isfile(self.image_path_of(entry)):
                raise FileNotFoundError(f"image file not found: {self.image_path_of(entry)} (split {name!r})")
        caption_ids = [f"{e.path}#{k}" for e in self.entries for k in range(len(e.captions))]
        caption_image = [i for i, e in enumerate(self.entries) for _ in e.captions]
        self.texts = [c for e in self.entries for c in e.captions]
        super().__init__(caption_ids, [e.path for e in self.entries], caption_image, image_cache=image_cache)

    def image_path_of(self, entry: KarpathyImage) -> str:
        return os.path.join(self.image_root, entry.path)

    def image_path(self, i: int) -> str:
        """The file of image ``i``."""
        return self.image_path_of(self.entries[i])

    def load_caption(self, c: int) -> list[int]:
        """Word-piece ids of caption ``c``: ``[CLS] ... [SEP]``, at most ``max_text_len``."""
        return list(self.tokenizer(self.texts[c], truncation=True, max_length=self.max_text_len)["input_ids"])

    def load_image(self, i: int) -> torch.Tensor:
        """Image ``i`` resized by the image processor: ``(3, h, w)``, before rescaling and normalising."""
        image = open_image(self.image_path(i))
        try:
            resized = self.image_processor(image, do_rescale=False, do_normalize=False, do_pad=False, **self.resize)
        except (OSError, ValueError) as err:
            raise ImageReadError(f"cannot process image {self.image_path(i)}: {err}") from None
        return torch.as_tensor(np.asarray(resized["pixel_values"][0]))

    def describe(self) -> dict:
        return {"split": self.name, "image_root": self.image_root}


class ViltCollate:
    """``collate(captions, images, image_index) -> dict``, the plug-in's batches (see the module docstring).

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids`` ``(B, max_text_len)``;
    ``pixel_values`` ``(U, 3, H, W)`` and ``pixel_mask`` ``(U, H, W)`` for the
    ``U`` distinct images; ``image_index`` ``(B,)``.
    """

    def __init__(self, processor: Any, *, max_text_len: int) -> None:
        self.tokenizer, self.image_processor = processor.tokenizer, processor.image_processor
        self.max_text_len = int(max_text_len)

    def __call__(self, captions: Sequence[Sequence[int]], images: Sequence[torch.Tensor],
                 image_index: Sequence[int]) -> dict:
        if len(captions) != len(image_index):
            raise ValueError(f"need one image index per caption, got {len(image_index)} for {len(captions)} captions")
        text = self.tokenizer.pad({"input_ids": [list(c) for c in captions]}, padding="max_length",
                                  max_length=self.max_text_len, return_tensors="pt", return_attention_mask=True)
        pixels = self.image_processor([np.asarray(im) for im in images], do_resize=False, do_pad=True,
                                      return_tensors="pt")
        return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                "token_type_ids": torch.zeros_like(text["input_ids"]), "pixel_values": pixels["pixel_values"],
                "pixel_mask": pixels["pixel_mask"], "image_index": torch.as_tensor(list(image_index), dtype=torch.long)}
