"""What a training step reads: the positives of this rank and random negatives.

The original recipe (``train_itm_hard_negatives.py`` of UNITER) walks the
captions in a shuffled order, twice in parallel:

- **from text**: a caption, its image and ``negative_size`` random *other*
  images of the same database;
- **from image**: a caption's image, that caption and ``negative_size``
  random captions of *other* images of the same database.

Here every process (rank ``r`` of ``W``) owns the captions of the images
``r, r + W, r + 2W, ...`` of the split (:class:`~.protocol.Pairs`),
so the ranks see disjoint positives; negatives are drawn from the whole
database. Each rank has its own random streams: the caption order of epoch
``e`` in direction ``d`` is a permutation seeded by ``(seed, rank, d, e)`` and
the negatives come from one ``numpy`` PCG64 generator seeded by
``(seed, rank)``. :meth:`HardNegativeSampler.state_dict` holds the cursor of
both directions and the generator state, so a resumed run draws exactly the
groups the uninterrupted run would have drawn.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .protocol import Pairs

__all__ = ["HardNegativeSampler", "CandidateSet", "Prepared", "prepare", "CandidateStream", "DIRECTIONS"]

#: sampling directions, in the order a micro-step uses them (as the original)
DIRECTIONS = ("image", "text")
_DIR_CODE = {"text": 0, "image": 1}


class CandidateSet(NamedTuple):
    """The pairs one hard-negative group is mined from (positive first).

    Attributes:
        direction: ``"text"`` (one caption, many images) or ``"image"`` (one
            image, many captions).
        captions: caption index of each pair.
        images: image index of each pair.
    """

    direction: str
    captions: list
    images: list


def _sample_excluding(rng: np.random.Generator, n: int, excluded: Sequence[int], k: int) -> np.ndarray:
    """``k`` distinct values of ``range(n)`` minus ``excluded`` (sorted, distinct), in random order."""
    draw = rng.choice(n - len(excluded), size=k, replace=False)
    for e in excluded:  # ascending: shift past every excluded value
        draw = draw + (draw >= e)
    return draw


class HardNegativeSampler:
    """Per-rank positives, random negatives and a resumable random stream.

    Args:
        pairs: the training split.
        negative_size: random negatives per group (fewer when a database is
            too small; a warning says so, once for images and once for captions).
        seed: the run's seed; rank: this process; world_size: processes.

    Example (caption 17 with its image 3 first, then 399 other images)::

        sampler = HardNegativeSampler(pairs, negative_size=399, seed=42)
        sampler.next("text")   # CandidateSet(direction='text', captions=[17, 17, ...], images=[3, 250, ...])
    """

    def __init__(self, pairs: Pairs, *, negative_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if negative_size < 1:
            raise ValueError(f"negative_size must be >= 1, got {negative_size}")
        self.pairs = pairs
        self.negative_size = int(negative_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        mine = set(range(rank, pairs.n_images, world_size))
        self.positives = np.array([c for c in range(pairs.n_captions) if pairs.caption_image[c] in mine], dtype=np.int64)
        if len(self.positives) == 0:
            raise ValueError(f"rank {rank} of {world_size} owns no training caption: the training set has "
                             f"only {pairs.n_images} image(s); use fewer processes")
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.rank, 1234])))
        self.cursor = {d: [0, 0] for d in DIRECTIONS}  # [epoch, position]
        self._orders: dict[str, tuple[int, np.ndarray]] = {}
        self._warned: set = set()

    def __len__(self) -> int:
        """Positive captions of this rank (one epoch of one direction)."""
        return len(self.positives)

    def _order(self, direction: str, epoch: int) -> np.ndarray:
        cached = self._orders.get(direction)
        if cached is None or cached[0] != epoch:
            gen = np.random.default_rng([self.seed, self.rank, _DIR_CODE[direction], epoch])
            cached = (epoch, gen.permutation(len(self.positives)))
            self._orders[direction] = cached
        return cached[1]

    def _next_positive(self, direction: str) -> int:
        epoch, pos = self.cursor[direction]
        if pos >= len(self.positives):
            epoch, pos = epoch + 1, 0
        cap = int(self.positives[self._order(direction, epoch)[pos]])
        self.cursor[direction] = [epoch, pos + 1]
        return cap

    def _k(self, available: int, what: str) -> int:
        k = min(self.negative_size, available)
        if k < self.negative_size and what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"negative_size={self.negative_size} but only {available} {what} are available "
                          f"as negatives; using {k}", UserWarning, stacklevel=3)
        if k < 1:
            raise ValueError(f"no negative {what} available: every training database needs at least 2 images")
        return k

    def next(self, direction: str) -> CandidateSet:
        """The candidates of the next group of ``direction`` (positive first)."""
        pairs = self.pairs
        cap = self._next_positive(direction)
        img = pairs.caption_image[cap]
        src = pairs.caption_source[cap]
        if direction == "text":
            imgs = pairs.source_images[src]
            k = self._k(len(imgs) - 1, "images")
            neg = _sample_excluding(self.rng, len(imgs), [img - imgs.start], k) + imgs.start
            return CandidateSet("text", [cap] * (k + 1), [img] + neg.tolist())
        if direction == "image":
            caps = pairs.source_captions[src]
            own = sorted(c - caps.start for c in pairs.image_captions[img])
            k = self._k(len(caps) - len(own), "captions")
            neg = _sample_excluding(self.rng, len(caps), own, k) + caps.start
            return CandidateSet("image", [cap] + neg.tolist(), [img] * (k + 1))
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")

    def state_dict(self) -> dict:
        """Cursor of both directions and the negative stream, as plain Python values."""
        return {"seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "n_positives": len(self.positives), "cursor": {d: list(v) for d, v in self.cursor.items()},
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` (same data and process layout required)."""
        mine = (self.seed, self.rank, self.world_size, len(self.positives))
        theirs = (state["seed"], state["rank"], state["world_size"], state["n_positives"])
        if mine != theirs:
            raise ValueError(f"sampler state is for (seed, rank, world_size, n_positives) = {theirs}, "
                             f"this run has {mine}")
        self.cursor = {d: [int(v) for v in state["cursor"][d]] for d in DIRECTIONS}
        self.rng.bit_generator.state = state["rng"]


class Prepared(NamedTuple):
    """A :class:`CandidateSet` with its data decoded (what a data worker hands over).

    Attributes:
        candidates: the ids.
        captions: ``{caption: decoded caption}`` for every caption used.
        images: ``{image: decoded image}`` for every image used.
    """

    candidates: CandidateSet
    captions: dict
    images: dict

    def caption(self, c: int) -> Any:
        return self.captions[c]

    def image(self, i: int) -> Any:
        return self.images[i]


def prepare(pairs: Pairs, candidates: CandidateSet) -> Prepared:
    """Decode every caption and image of ``candidates``."""
    captions = {c: pairs.caption(c) for c in dict.fromkeys(candidates.captions)}
    images = {i: pairs.image(i) for i in dict.fromkeys(candidates.images)}
    return Prepared(candidates, captions, images)


class CandidateStream(IterableDataset):
    """The endless sequence of prepared candidate sets, directions alternating.

    Item ``i`` has direction ``DIRECTIONS[i % 2]`` (from image first, as the
    original). With ``DataLoader(num_workers=n)``, worker ``w`` runs a copy of
    the sampler (cheap: only random draws) and decodes the items ``i = w
    (mod n)``; the loader returns them in order, so the sequence is the same
    for any ``n``. The training loop keeps the authoritative sampler and
    checks every item against it.

    Args:
        pairs: the training split; sampler_kwargs: :class:`HardNegativeSampler` arguments;
        state: a :meth:`HardNegativeSampler.state_dict` to start from (None: fresh).
    """

    def __init__(self, pairs: Pairs, sampler_kwargs: dict, state: dict | None) -> None:
        super().__init__()
        self.pairs = pairs
        self.sampler_kwargs = dict(sampler_kwargs)
        self.state = state

    def __iter__(self) -> Iterator[Prepared]:
        info = get_worker_info()
        n, w = (info.num_workers, info.id) if info is not None else (1, 0)
        sampler = HardNegativeSampler(self.pairs, **self.sampler_kwargs)
        if self.state is not None:
            sampler.load_state_dict(self.state)
        sampler._warned = {"images", "captions"}  # the training loop's own sampler warns
        i = 0
        while True:
            for direction in DIRECTIONS:
                candidates = sampler.next(direction)
                if i % n == w:
                    yield prepare(self.pairs, candidates)
                i += 1
