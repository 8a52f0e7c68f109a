"""ISDa of a model over object-annotated pairs (paper Sec. 2.2-2.3, Eq. 9, Table 2).

A plug-in turns its annotations (e.g. Flickr30k Entities) into
:class:`ObjectPair` items: a decoded caption and image, and for every object
present in both modalities its positions in the joint sequence. The engine
runs the model on batches of them, with the last layer's scores of every row,
and computes :func:`iaisreg.isda` and the four IAIS surrogate losses on them.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import torch

import iaisreg.torch as iais_torch

from .mining import to_device
from .progress import Progress
from .protocol import Collate, RetrievalOutput

__all__ = ["ObjectPair", "SURROGATES", "pair_scores", "object_attention", "isda_over_pairs"]

#: the four surrogate losses reported next to ISDa (paper Table 2)
SURROGATES = tuple((mode, anchor) for mode in ("singular", "distributed") for anchor in ("V", "L"))


class ObjectPair(NamedTuple):
    """A caption and its image with object annotations.

    Attributes:
        caption, image: decoded as the plug-in's collate takes them.
        text_groups, image_groups: per object, its token positions and its
            image-item positions in the pair's joint sequence.
    """

    caption: Any
    image: Any
    text_groups: Sequence[Sequence[int]]
    image_groups: Sequence[Sequence[int]]


@torch.no_grad()
def pair_scores(model: torch.nn.Module, collate: Collate, pairs: Sequence[ObjectPair],
                device: torch.device) -> RetrievalOutput:
    """The model's output on ``pairs`` (eval mode) with the last-layer scores of every row, in float32."""
    batch = collate([p.caption for p in pairs], [p.image for p in pairs], list(range(len(pairs))))
    was_training = model.training
    model.eval()
    try:
        out = model(**to_device(batch, device), scores_rows=torch.arange(len(pairs), device=device))
    finally:
        model.train(was_training)
    return out._replace(scores=out.scores.float(), logits=out.logits.float())


def object_attention(model: torch.nn.Module, collate: Collate, pair: ObjectPair,
                     device: torch.device) -> tuple[np.ndarray, np.ndarray, float]:
    """Object-level text and image self-attention ``(K, K)`` of one pair, and its ISDa."""
    out = pair_scores(model, collate, [pair], device)
    res = iais_torch.isda(out.scores, [pair.text_groups], [pair.image_groups], text_mask=out.text_mask,
                          image_mask=out.image_mask, return_matrices=True)
    return res.text[0, 0].cpu().numpy(), res.image[0, 0].cpu().numpy(), float(res.value[0])


def isda_over_pairs(model: torch.nn.Module, collate: Collate, pairs: Iterable[ObjectPair], *, batch_size: int = 32,
                    device: torch.device | str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Mean ISDa and the mean IAIS surrogate losses (``iais_<mode>_<anchor>``) over ``pairs``.

    Also returns ``n_captions`` and ``n_objects``. Raises ``ValueError`` when
    ``pairs`` is empty. ``progress``: show the progress (see :mod:`.progress`).
    """
    device = torch.device(device)
    values: list[float] = []
    surrogate: dict[str, list[float]] = {f"iais_{m}_{a}": [] for m, a in SURROGATES}
    n_objects = 0
    with Progress(desc="ISDa", unit="caption", enabled=progress) as bar:
        for chunk in _chunks(pairs, batch_size):
            out = pair_scores(model, collate, chunk, device)
            masks = dict(text_mask=out.text_mask, image_mask=out.image_mask)
            v = iais_torch.isda(out.scores, [p.text_groups for p in chunk], [p.image_groups for p in chunk], **masks)
            values.extend(v.cpu().tolist())
            for mode, anchor in SURROGATES:
                loss = iais_torch.iais(out.scores, mode=mode, anchor=anchor, reduction="none", **masks)
                surrogate[f"iais_{mode}_{anchor}"].extend(loss.cpu().tolist())
            n_objects += sum(len(p.text_groups) for p in chunk)
            bar.update(len(chunk))
    if not values:
        raise ValueError("no annotated pair to compute ISDa on")
    return {"isda": float(np.mean(values)), "n_captions": len(values), "n_objects": n_objects,
            **{k: float(np.mean(v)) for k, v in surrogate.items()}}


def _chunks(items: Iterable, size: int):
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
