"""Batching of (caption, image) pairs in UNITER's compact layout.

UNITER pads texts to the batch maximum ``max_tl`` and regions to ``max_nbb``,
embeds both, concatenates them (``max_tl + max_nbb`` positions) and then
*gathers* each sample's regions right after its own text, so that sample ``b``
occupies positions ``0 .. txt_len[b] + num_bb[b] - 1`` of the joint sequence:

====================  =======================================
position              content
====================  =======================================
0                     ``[CLS]``
1 .. tl-2             word pieces (the IAIS text items)
tl-1                  ``[SEP]``
tl .. tl+nbb-1        regions (the IAIS image items)
tl+nbb ..             padding (``attn_masks`` = 0)
====================  =======================================

where ``tl = txt_lens[b]`` counts ``[CLS]`` and ``[SEP]``.

:func:`collate_original_from_image` builds, on request, the batches the
authors' code fed its **no-IAIS** from-image groups instead (the paper's
baseline; ``--baseline-layout original``), corruption included; see its
docstring and ``docs/finetune.md``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

import iaisreg.torch as iais_torch

__all__ = ["PairSample", "collate", "collate_pairs", "collate_original_from_image", "layout_tensors", "item_masks",
           "BATCH_KEYS"]

#: keys of a collated batch
BATCH_KEYS = ("input_ids", "position_ids", "img_feat", "img_pos_feat", "attn_masks",
              "gather_index", "txt_lens", "num_bbs")


class PairSample(NamedTuple):
    """One (caption, image) pair.

    Attributes:
        input_ids: ``(tl,)`` LongTensor ``[CLS] + ids + [SEP]``.
        img_feat: ``(nbb, img_dim)`` region features.
        img_pos_feat: ``(nbb, 7)`` box features.
    """

    input_ids: torch.Tensor
    img_feat: torch.Tensor
    img_pos_feat: torch.Tensor


def _check_lengths(txt_lens: Sequence[int], num_bbs: Sequence[int]) -> None:
    if len(txt_lens) != len(num_bbs) or len(txt_lens) == 0:
        raise ValueError(f"txt_lens and num_bbs must be non-empty and of equal length, got "
                         f"{len(txt_lens)} and {len(num_bbs)}")
    if min(txt_lens) < 2:
        raise ValueError(f"txt_lens count [CLS] and [SEP] and must be >= 2, got {min(txt_lens)}")
    if min(num_bbs) < 1:
        raise ValueError(f"num_bbs must be >= 1, got {min(num_bbs)}")


def layout_tensors(txt_lens: Sequence[int], num_bbs: Sequence[int], *,
                   max_tl: int | None = None) -> dict[str, torch.Tensor]:
    """Index tensors of the compact layout, on the CPU.

    Args:
        txt_lens: per-sample text length including ``[CLS]`` and ``[SEP]``.
        num_bbs: per-sample number of regions.
        max_tl: width of the padded text tensor (default ``max(txt_lens)``).

    Returns:
        ``position_ids`` ``(1, max_tl)``, ``attn_masks`` ``(B, N)`` (1 = real
        position), ``gather_index`` ``(B, N)`` (index into the concatenation of
        padded text and padded region embeddings), ``txt_lens`` ``(B,)`` and
        ``num_bbs`` ``(B,)``, all int64; ``N = max(txt_lens + num_bbs)``.

    Example:
        >>> out = layout_tensors([4, 3], [2, 3])
        >>> out["gather_index"].tolist()
        [[0, 1, 2, 3, 4, 5], [0, 1, 2, 4, 5, 6]]
        >>> out["attn_masks"].tolist()
        [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]
    """
    _check_lengths(txt_lens, num_bbs)
    if max_tl is None:
        max_tl = max(txt_lens)
    elif max_tl < max(txt_lens):
        raise ValueError(f"max_tl ({max_tl}) is smaller than the longest text ({max(txt_lens)})")
    n = max(t + b for t, b in zip(txt_lens, num_bbs))
    tl = torch.tensor(txt_lens, dtype=torch.long)
    nb = torch.tensor(num_bbs, dtype=torch.long)
    pos = torch.arange(n, dtype=torch.long).unsqueeze(0)         # (1, N)
    end_txt, end_img = tl.unsqueeze(1), (tl + nb).unsqueeze(1)    # (B, 1)
    # Regions of sample b sit at max_tl .. max_tl+nbb-1 of the concatenation; move
    # them to tl .. tl+nbb-1. Padding positions keep an arbitrary valid index.
    gather_index = torch.where((pos >= end_txt) & (pos < end_img), pos - end_txt + max_tl, pos)
    return {
        "position_ids": torch.arange(max_tl, dtype=torch.long).unsqueeze(0),
        "attn_masks": (pos < end_img).long(),
        "gather_index": gather_index,
        "txt_lens": tl,
        "num_bbs": nb,
    }


def collate(captions: Sequence[torch.Tensor], images: Sequence[tuple[torch.Tensor, torch.Tensor]],
            image_index: Sequence[int]) -> dict[str, torch.Tensor]:
    """One model batch for the pairs ``(captions[b], images[image_index[b]])``.

    Each distinct image is stored once in ``img_feat``/``img_pos_feat``
    ``(U, R, D)``; ``img_index`` ``(B,)`` points every row at its image (the
    model embeds each image once). This is the UNITER plug-in's collate
    function (:class:`integrations.retrieval.RetrievalPlugin`).

    Args:
        captions: ``B`` LongTensors ``[CLS] + ids + [SEP]``.
        images: ``U`` ``(features (nbb, D), boxes (nbb, 7))`` pairs.
        image_index: ``B`` indices into ``images``.

    Returns:
        ``input_ids`` ``(B, max_tl)`` padded with 0, ``img_feat``,
        ``img_pos_feat``, ``img_index`` and the tensors of :func:`layout_tensors`.
    """
    if len(captions) != len(image_index) or not captions:
        raise ValueError(f"need one image index per caption (>= 1), got {len(image_index)} for {len(captions)}")
    out = layout_tensors([len(t) for t in captions], [images[i][0].shape[0] for i in image_index])
    out["input_ids"] = pad_sequence(list(captions), batch_first=True, padding_value=0)
    out["img_feat"] = pad_sequence([f for f, _ in images], batch_first=True, padding_value=0.0)
    out["img_pos_feat"] = pad_sequence([b for _, b in images], batch_first=True, padding_value=0.0)
    out["img_index"] = torch.as_tensor(list(image_index), dtype=torch.long)
    return out


def collate_original_from_image(captions: Sequence[torch.Tensor], image: tuple[torch.Tensor, torch.Tensor], *,
                                max_tl: int, last_tl: int, mining: bool) -> dict[str, torch.Tensor]:
    """A from-image batch laid out as the authors' no-IAIS code laid it out (the paper's baseline).

    Their from-image group is one batch: every caption of the candidate set
    padded to the set's longest, ``max_tl``, then the image's ``nbb`` regions;
    row ``i``'s attention mask covers ``[0, tl_i + nbb)`` of the
    ``max_tl + nbb`` positions. The two passes differ:

    - **mining** adds a gather index built with ``tl``, the loop variable left
      over from their caption loop, i.e. the length of the set's *last*
      caption ``last_tl``: region slot ``k`` of row ``i`` (position
      ``tl_i + k``) reads position ``last_tl + k`` of ``[text padded to
      max_tl; regions]``, which is text or padding while ``last_tl + k <
      max_tl`` and region ``last_tl + k - max_tl`` after;
    - **training** has no gather index: the rows run on the plain
      concatenation with the same mask, so row ``i`` attends to ``max_tl -
      tl_i`` padding positions and only to its first ``tl_i + nbb - max_tl``
      regions.

    Args:
        captions: ``B`` LongTensors ``[CLS] + ids + [SEP]`` (some rows of the set).
        image: ``(features (nbb, D), boxes (nbb, 7))``, the group's one image.
        max_tl: longest caption of the whole candidate set (with ``[CLS]``/``[SEP]``).
        last_tl: length of the candidate set's last caption.
        mining: the mining pass (with the leaked gather index) or the training pass.

    Returns:
        The keys of :func:`collate`; ``input_ids`` ``(B, max_tl)``,
        ``attn_masks`` ``(B, max_tl + nbb)``, ``img_index`` all 0, and
        ``gather_index`` only when ``mining``.

    Example (the last caption has 3 tokens, the longest 5, 2 regions):
        >>> caps = [torch.tensor([101, 7, 8, 9, 102]), torch.tensor([101, 7, 102])]
        >>> b = collate_original_from_image(caps, (torch.zeros(2, 4), torch.zeros(2, 7)), max_tl=5, last_tl=3,
        ...                                 mining=True)
        >>> b["gather_index"].tolist()   # row 0: its region slots 5, 6 read text positions 3, 4
        [[0, 1, 2, 3, 4, 3, 4], [0, 1, 2, 3, 4, 5, 6]]
        >>> b["attn_masks"].tolist()
        [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]]
    """
    features, boxes = image
    _check_lengths([len(t) for t in captions], [features.shape[0]] * len(captions))
    tl = torch.tensor([len(t) for t in captions], dtype=torch.long)
    nbb = features.shape[0]
    if not int(tl.max()) <= max_tl or not 2 <= last_tl <= max_tl:
        raise ValueError(f"need every caption and last_tl ({last_tl}) within max_tl ({max_tl}), got lengths up to "
                         f"{int(tl.max())}")
    pos = torch.arange(max_tl + nbb, dtype=torch.long).unsqueeze(0)
    input_ids = torch.zeros(len(captions), max_tl, dtype=torch.long)
    for row, tokens in enumerate(captions):
        input_ids[row, :len(tokens)] = tokens
    out = {"input_ids": input_ids, "position_ids": torch.arange(max_tl, dtype=torch.long).unsqueeze(0),
           "img_feat": features.unsqueeze(0), "img_pos_feat": boxes.unsqueeze(0),
           "img_index": torch.zeros(len(captions), dtype=torch.long),
           "attn_masks": (pos < (tl + nbb).unsqueeze(1)).long(), "txt_lens": tl,
           "num_bbs": torch.full_like(tl, nbb)}
    if mining:
        slot = pos - tl.unsqueeze(1)
        out["gather_index"] = torch.where((slot >= 0) & (slot < nbb), last_tl + slot, pos)
    return out


def collate_pairs(samples: Sequence[PairSample | tuple]) -> dict[str, torch.Tensor]:
    """Collate (caption, image) pairs into one model batch, one image per row.

    Args:
        samples: ``B`` items ``(input_ids (tl,), img_feat (nbb, D), img_pos_feat (nbb, 7))``.

    Returns:
        A dict with :data:`BATCH_KEYS`: ``input_ids`` ``(B, max_tl)`` padded
        with 0, ``position_ids`` ``(1, max_tl)``, ``img_feat`` ``(B, max_nbb, D)``
        and ``img_pos_feat`` ``(B, max_nbb, 7)`` padded with 0, plus the tensors
        of :func:`layout_tensors`. ``model(**batch)`` accepts it.
    """
    if len(samples) == 0:
        raise ValueError("samples must not be empty")
    out = collate([s[0] for s in samples], [(s[1], s[2]) for s in samples], range(len(samples)))
    return {key: out[key] for key in BATCH_KEYS}


def item_masks(txt_lens: torch.Tensor, num_bbs: torch.Tensor, n: int, *, compact: bool = True,
               max_tl: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The IAIS items of a joint sequence of length ``n``: ``(text_mask, image_mask)``, ``(B, N)``.

    Text items are the word pieces (positions ``1 .. tl-2``, no ``[CLS]``/``[SEP]``);
    image items are the regions, right after each sample's own text in the
    compact layout (``tl .. tl+nbb-1``) or from ``max_tl`` on in the plain
    concatenation (``compact=False``).

    >>> t, v = item_masks(torch.tensor([4]), torch.tensor([2]), 7)
    >>> t.int().tolist(), v.int().tolist()
    ([[0, 1, 1, 0, 0, 0, 0]], [[0, 0, 0, 0, 1, 1, 0]])
    """
    image_start = txt_lens if compact else max_tl
    return tuple(iais_torch.masks_from_lengths(n, txt_lens - 2, num_bbs, text_start=1, image_start=image_start))
