"""Hard-negative mining and training groups.

Mining follows the original recipe: the model in eval mode, under
``torch.no_grad()``, scores the positive and its ``negative_size`` random
negatives (here in chunks of ``inf_minibatch_size`` pairs); the
``hard_neg_size`` highest-scoring negatives and the positive (row 0) form the
training group. Every batch stores each distinct image once
(:func:`collate_pairs`), so a from-image group holds its image once, however
many captions it pairs with. A collate that takes the keyword ``group``
receives a :class:`~.protocol.GroupInfo` with every batch of a group (all the
candidate captions, the batch's rows, mining or training).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple, Sequence

import torch

from .protocol import Collate, GroupInfo, takes_group
from .sampling import Prepared

__all__ = ["Group", "collate_pairs", "group_info", "to_device", "mine_hard_negatives", "make_group"]


class Group(NamedTuple):
    """One training group: the positive pair (row 0) and its hard negatives.

    Attributes:
        direction: ``"text"`` or ``"image"`` (what the negatives were sampled for).
        batch: model inputs on the device (``model(**batch)``).
        captions, images: caption and image index of each row.
        n_scored: pairs scored while mining this group.
    """

    direction: str
    batch: dict
    captions: list
    images: list
    n_scored: int


def collate_pairs(source: Any, captions: Sequence[int], images: Sequence[int], collate: Collate, *,
                  group: GroupInfo | None = None) -> dict:
    """Model inputs (CPU) for the pairs ``(captions[b], images[b])``.

    ``source`` is anything with ``caption(c)`` and ``image(i)`` (a
    :class:`~.protocol.Pairs` split or a :class:`~.sampling.Prepared` item);
    each distinct image is decoded and passed to ``collate`` once. ``group``
    is passed on only to a collate that takes it.
    """
    if len(captions) != len(images) or not captions:
        raise ValueError(f"need as many captions as images (>= 1), got {len(captions)} and {len(images)}")
    slot: dict[int, int] = {}
    for i in images:
        slot.setdefault(i, len(slot))
    extra = {"group": group} if group is not None and takes_group(collate) else {}
    return collate([source.caption(c) for c in captions], [source.image(i) for i in slot],
                   [slot[i] for i in images], **extra)


def group_info(prepared: Prepared, phase: str, rows: Sequence[int]) -> GroupInfo:
    """The :class:`~.protocol.GroupInfo` of the batch holding ``rows`` of ``prepared``'s candidates."""
    candidates = prepared.candidates
    return GroupInfo(candidates.direction, phase, [prepared.caption(c) for c in candidates.captions], list(rows))


def to_device(batch: dict, device: torch.device) -> dict:
    """Copy a batch's tensors to ``device`` (pinned, asynchronous copies on CUDA)."""
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def mine_hard_negatives(model: torch.nn.Module, prepared: Prepared, collate: Collate, *, hard_neg_size: int,
                        chunk_size: int, device: torch.device,
                        autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> list[int]:
    """Rows of the candidates forming the training group: ``[0]`` + the hardest negatives.

    The model runs in eval mode (no dropout) under ``torch.no_grad()``, on
    ``chunk_size`` pairs at a time; its train/eval mode is restored after.
    Negatives are ordered by decreasing score (ties: lower row first).

    Args:
        model: the bare model (not the DDP wrapper: mining involves no
            gradient and no collective).
        hard_neg_size: negatives kept (fewer if fewer were sampled).
        autocast: a factory of the autocast context (None: full precision).
    """
    candidates = prepared.candidates
    n = len(candidates.captions)
    was_training = model.training
    model.eval()
    logits = []
    info = group_info(prepared, "mining", [])
    try:
        for lo in range(0, n, chunk_size):
            batch = collate_pairs(prepared, candidates.captions[lo:lo + chunk_size],
                                  candidates.images[lo:lo + chunk_size], collate,
                                  group=info._replace(rows=list(range(lo, min(lo + chunk_size, n)))))
            with autocast() if autocast is not None else contextlib.nullcontext():
                logits.append(model(**to_device(batch, device)).logits.float())
    finally:
        model.train(was_training)
    scores = torch.cat(logits)
    k = min(hard_neg_size, n - 1)
    # stable descending order: ties keep the lower row first, on every platform
    order = torch.sort(scores[1:], descending=True, stable=True).indices[:k] + 1
    return [0] + order.tolist()


def make_group(prepared: Prepared, rows: Sequence[int], collate: Collate, device: torch.device) -> Group:
    """The training :class:`Group` made of ``rows`` of the candidates (row 0 = positive)."""
    candidates = prepared.candidates
    captions = [candidates.captions[r] for r in rows]
    images = [candidates.images[r] for r in rows]
    batch = collate_pairs(prepared, captions, images, collate, group=group_info(prepared, "training", rows))
    return Group(candidates.direction, to_device(batch, device), captions, images, len(candidates.captions))
