"""What a model plug-in owes the engine.

The engine trains and evaluates any single-stream image-text matcher through
three things a plug-in provides:

1. **A split** (:class:`Pairs`): captions and images numbered ``0..n-1``, each
   caption paired with one image, grouped in sources (databases) inside which
   negatives are drawn. The plug-in subclasses :class:`Pairs` and decodes one
   caption (:meth:`Pairs.load_caption`) or one image
   (:meth:`Pairs.load_image`) from its own files.
2. **A collate function** ``collate(captions, images, image_index) -> dict``:
   the model inputs (CPU tensors) for the pairs ``(captions[b],
   images[image_index[b]])``; each distinct image is passed once. When the
   batch belongs to a hard-negative group and the function takes a keyword
   argument ``group``, the engine also passes a :class:`GroupInfo` (the
   group's direction, all its candidate captions, mining or training), so that
   a plug-in can lay out a chunk as if the whole candidate set were one batch
   (the UNITER plug-in's ``--baseline-layout original`` needs this). Plug-ins
   that do not need it leave the keyword out and never see it; evaluation
   batches never carry it.
3. **A model**, a ``torch.nn.Module`` called as ``model(**batch,
   scores_rows=rows)`` that returns a :class:`RetrievalOutput`: a match logit
   per pair and, for the batch rows in ``scores_rows``, the last layer's
   pre-softmax attention scores with the text and image item masks, which is
   what the IAIS term needs.

:class:`RetrievalPlugin` bundles them with how to open the splits and build the
model; :func:`integrations.retrieval.train` takes one.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import torch

__all__ = ["RetrievalOutput", "GroupInfo", "Pairs", "Collate", "RetrievalPlugin", "DataError", "takes_group"]


class DataError(Exception):
    """Data a plug-in cannot use (a damaged database, an unreadable image or split file): the user's to fix.

    The message names the file (and the record) and what to do; the commands
    print it as one line (exit status 2). Raised in a ``DataLoader`` worker,
    the error reaches the main process re-made from a message that holds the
    worker's whole traceback (``torch.utils.data``'s ``ExceptionWrapper``);
    only its last line, the original message, is kept.
    """

    def __init__(self, message: str) -> None:
        lines = [line for line in str(message).strip().splitlines() if line.strip()]
        last = lines[-1] if lines else str(message)
        super().__init__(last.split(f"{type(self).__name__}: ", 1)[-1] if len(lines) > 1 else last)


class RetrievalOutput(NamedTuple):
    """What a plug-in's model returns.

    Attributes:
        logits: ``(B,)`` match logits (the score is ``sigmoid(logits)``).
        scores: ``(P, H, N, N)`` last-layer ``Q K^T / sqrt(d_head)`` (before
            the mask) of the ``P`` rows asked for with ``scores_rows``, or None.
        text_mask, image_mask: ``(P, N)`` booleans, the text items and the
            image items of those rows (what :func:`iaisreg.iais` calls L and
            V), or None.
    """

    logits: torch.Tensor
    scores: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    image_mask: torch.Tensor | None = None


class GroupInfo(NamedTuple):
    """What a batch of a hard-negative group is part of (the optional ``group`` keyword of a collate).

    Attributes:
        direction: ``"image"`` (one image, many captions) or ``"text"`` (one
            caption, many images).
        phase: ``"mining"`` (scoring the candidates, chunk by chunk) or
            ``"training"`` (the positive and the hard negatives kept).
        captions: the decoded captions of the **whole** candidate set, in
            candidate order (row 0 the positive), whatever part of it the
            batch holds.
        rows: the candidate rows of the batch's pairs, in batch order.
    """

    direction: str
    phase: str
    captions: Sequence[Any]
    rows: Sequence[int]


#: ``collate(captions, images, image_index[, *, group]) -> model inputs`` (CPU tensors)
Collate = Callable[..., dict]


def takes_group(collate: Callable[..., Any]) -> bool:
    """Whether ``collate`` accepts the keyword argument ``group`` (a :class:`GroupInfo`)."""
    func = getattr(collate, "__func__", collate)
    try:
        return _takes_group(func)
    except TypeError:  # an unhashable callable object: inspect it every time
        return _takes_group.__wrapped__(func)


@functools.lru_cache(maxsize=64)
def _takes_group(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature: never passed
        return False
    return any(p.name == "group" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
               or p.kind == p.VAR_KEYWORD for p in params)


class Pairs:
    """The captions and images of a split, numbered, with decoding caches.

    Caption ``c`` (``0 <= c < n_captions``) pairs with image
    ``caption_image[c]``. The captions and images of source ``s`` form the
    contiguous ranges ``source_captions[s]`` and ``source_images[s]``.
    Subclasses implement :meth:`load_caption` and :meth:`load_image`; the
    engine reads through :meth:`caption` (cached) and :meth:`image` (an LRU
    cache of ``image_cache`` entries).

    Args:
        caption_ids, image_ids: the names of captions and images, in order.
        caption_image: image index of each caption.
        sources: caption count and image count of each source, in order
            (default: one source).
        image_cache: decoded images kept (0: none).
    """

    def __init__(self, caption_ids: Sequence[str], image_ids: Sequence[str], caption_image: Sequence[int], *,
                 sources: Sequence[tuple[int, int]] | None = None, image_cache: int = 1024) -> None:
        if len(caption_ids) != len(caption_image):
            raise ValueError(f"need one image per caption, got {len(caption_image)} for {len(caption_ids)} captions")
        if not caption_ids:
            raise ValueError("a split needs at least one caption")
        self.caption_ids, self.image_ids = list(caption_ids), list(image_ids)
        self.caption_image = [int(i) for i in caption_image]
        sources = sources or [(len(self.caption_ids), len(self.image_ids))]
        self.source_captions, self.source_images = _ranges([c for c, _ in sources]), _ranges([i for _, i in sources])
        self.caption_source = [s for s, r in enumerate(self.source_captions) for _ in r]
        if len(self.caption_source) != len(self.caption_ids) or self.source_images[-1].stop != len(self.image_ids):
            raise ValueError("the sources' caption and image counts must add up to the split's")
        self.image_captions: list[list[int]] = [[] for _ in self.image_ids]
        for c, i in enumerate(self.caption_image):
            self.image_captions[i].append(c)
        self._captions: dict[int, Any] = {}
        self._images: OrderedDict[int, Any] = OrderedDict()
        self.image_cache = max(0, int(image_cache))

    @property
    def n_captions(self) -> int:
        return len(self.caption_ids)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    def load_caption(self, c: int) -> Any:
        """Decode caption ``c`` (the plug-in's format, e.g. token ids)."""
        raise NotImplementedError

    def load_image(self, i: int) -> Any:
        """Decode image ``i`` (the plug-in's format, e.g. region features)."""
        raise NotImplementedError

    def caption(self, c: int) -> Any:
        """Caption ``c``, decoded once."""
        out = self._captions.get(c)
        if out is None:
            out = self._captions[c] = self.load_caption(c)
        return out

    def image(self, i: int) -> Any:
        """Image ``i``, through the LRU cache."""
        hit = self._images.get(i)
        if hit is not None:
            self._images.move_to_end(i)
            return hit
        out = self.load_image(i)
        if self.image_cache:
            self._images[i] = out
            if len(self._images) > self.image_cache:
                self._images.popitem(last=False)
        return out

    def caption_length(self, c: int) -> int:
        """Length of caption ``c`` (evaluation batches captions of similar length)."""
        return len(self.caption(c))

    def describe(self) -> dict:
        """JSON-ready facts naming the split (e.g. its files), written with its metrics."""
        return {}

    def close(self) -> None:
        """Release files; the default has none."""


def _ranges(counts: Sequence[int]) -> list[range]:
    out, start = [], 0
    for n in counts:
        out.append(range(start, start + n))
        start += n
    return out


class RetrievalPlugin(Protocol):
    """A model plug-in: its data, batches and model (see the module docstring).

    Optionally, a plug-in may also define ``check_options(opts: TrainOptions)
    -> None``, raising :class:`~integrations.retrieval.SetupError` for run
    options it cannot honour; :func:`~integrations.retrieval.train` calls it,
    when present, before opening any data.
    """

    def train_pairs(self, *, image_cache: int) -> Pairs:
        """The training split (all training sources)."""

    def eval_pairs(self, split: str) -> Pairs | None:
        """The ``"val"`` or ``"test"`` split, or None when the run has none."""

    def build_model(self, *, dropout: float, pretrained: bool) -> torch.nn.Module:
        """The model on the CPU; with ``pretrained``, its starting weights loaded."""

    def collate(self, captions: Sequence[Any], images: Sequence[Any], image_index: Sequence[int]) -> dict:
        """Model inputs for the pairs ``(captions[b], images[image_index[b]])``.

        May take a keyword-only ``group: GroupInfo | None = None`` as well (see
        the module docstring); the engine passes it only to a collate that
        declares it.
        """

    def describe(self) -> dict:
        """JSON-ready settings of the plug-in, saved with every run and checkpoint."""
