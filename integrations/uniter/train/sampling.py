"""What a training step reads: the positives of this rank and random negatives.

The original recipe (``train_itm_hard_negatives.py`` of UNITER) walks the
captions in a shuffled order, twice in parallel:

- **from text**: a caption, its image and ``negative_size`` random *other*
  images of the same database;
- **from image**: a caption's image, that caption and ``negative_size``
  random captions of *other* images of the same database.

Here every process (rank ``r`` of ``W``) owns the captions of the images
``r, r + W, r + 2W, ...`` (images sorted by name, databases in config order),
so the ranks see disjoint positives; negatives are drawn from the whole
database. Each rank has its own random streams: the caption order of epoch
``e`` in direction ``d`` is a permutation seeded by ``(seed, rank, d, e)`` and
the negatives come from one ``numpy`` PCG64 generator seeded by
``(seed, rank)``. :meth:`HardNegativeSampler.state_dict` holds the cursor of
both directions and the generator state, so a resumed run draws exactly the
groups the uninterrupted run would have drawn.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..data import ImgDb, MissingRecordError, TxtDb

__all__ = ["DataStore", "HardNegativeSampler", "CandidateSet", "Prepared", "prepare", "CandidateStream",
           "DIRECTIONS"]

logger = logging.getLogger(__name__)

#: sampling directions, in the order a micro-step uses them (as the original)
DIRECTIONS = ("image", "text")
_DIR_CODE = {"text": 0, "image": 1}


class DataStore:
    """The training captions and images, indexed by integers, with caches.

    Captions are numbered ``0 .. n_captions-1`` (database by database, in
    ``id2len.json`` order); images ``0 .. n_images-1`` (database by database,
    sorted by name, only images some kept caption refers to). Each database
    pair keeps its own contiguous ranges, so negatives can be drawn inside
    one database, as the original ``ConcatDataset`` did.

    Args:
        sources: ``[(TxtDb, ImgDb), ...]``, one pair per ``train_txt_dbs`` entry.
        image_cache: how many decoded images to keep (LRU); 0 disables the cache.
    """

    def __init__(self, sources: Sequence[tuple[TxtDb, ImgDb]], *, image_cache: int = 1024) -> None:
        if not sources:
            raise ValueError("need at least one (txt_db, img_db) pair of training data")
        self.sources = list(sources)
        self.cap_src: list[int] = []
        self.cap_txt_id: list[str] = []
        self.cap_img: list[int] = []
        self.img_src: list[int] = []
        self.img_fname: list[str] = []
        self.img_caps: list[list[int]] = []
        self.src_caps: list[range] = []
        self.src_imgs: list[range] = []
        for s, (txt_db, img_db) in enumerate(self.sources):
            fnames = sorted({txt_db.txt2img[t] for t in txt_db.ids})
            if not fnames:
                raise ValueError(f"txt_db {txt_db.path} holds no caption (after the max_txt_len filter)")
            for fname in fnames:
                if fname not in img_db:
                    raise MissingRecordError(
                        f"image {fname!r} (of txt_db {txt_db.path}) not in img_db {img_db.path}",
                        db_path=img_db.path, key=fname)
            img_start, cap_start = len(self.img_fname), len(self.cap_txt_id)
            col = {fname: img_start + j for j, fname in enumerate(fnames)}
            self.img_src.extend([s] * len(fnames))
            self.img_fname.extend(fnames)
            self.img_caps.extend([] for _ in fnames)
            for txt_id in txt_db.ids:
                img = col[txt_db.txt2img[txt_id]]
                self.img_caps[img].append(len(self.cap_txt_id))
                self.cap_src.append(s)
                self.cap_txt_id.append(txt_id)
                self.cap_img.append(img)
            self.src_caps.append(range(cap_start, len(self.cap_txt_id)))
            self.src_imgs.append(range(img_start, len(self.img_fname)))
        self._tokens: dict[int, torch.Tensor] = {}
        self._images: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.image_cache = max(0, int(image_cache))
        self.vocab_size: int | None = None
        self.max_positions: int | None = None

    @property
    def n_captions(self) -> int:
        return len(self.cap_txt_id)

    @property
    def n_images(self) -> int:
        return len(self.img_fname)

    def img_dim(self) -> int:
        """Width of the region features (read from the first image)."""
        return int(self.image(0)[0].shape[1])

    def tokens(self, cap: int) -> torch.Tensor:
        """``[CLS] + input_ids + [SEP]`` of caption ``cap`` (LongTensor, cached)."""
        out = self._tokens.get(cap)
        if out is None:
            txt_db = self.sources[self.cap_src[cap]][0]
            txt_id = self.cap_txt_id[cap]
            out = txt_db.combine_inputs(txt_db.input_ids(txt_id))
            if self.vocab_size is not None and int(out.max()) >= self.vocab_size:
                raise ValueError(f"txt_db {txt_db.path}: caption {txt_id!r} has token id {int(out.max())} "
                                 f">= vocab_size {self.vocab_size} of the model config")
            if self.max_positions is not None and out.numel() > self.max_positions:
                raise ValueError(f"txt_db {txt_db.path}: caption {txt_id!r} has {out.numel()} tokens with "
                                 f"[CLS]/[SEP], more than max_position_embeddings={self.max_positions}")
            self._tokens[cap] = out
        return out

    def image(self, img: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (nbb, D), boxes (nbb, 7))`` of image ``img`` (float32, LRU-cached)."""
        hit = self._images.get(img)
        if hit is not None:
            self._images.move_to_end(img)
            return hit
        img_db = self.sources[self.img_src[img]][1]
        out = tuple(img_db[self.img_fname[img]])
        if self.image_cache:
            self._images[img] = out
            if len(self._images) > self.image_cache:
                self._images.popitem(last=False)
        return out


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
        store: the training data.
        negative_size: random negatives per group (fewer when a database is
            too small; a warning says so, once for images and once for captions).
        seed: the run's seed; rank: this process; world_size: processes.

    Example (caption 17 with its image 3 first, then 399 other images)::

        sampler = HardNegativeSampler(store, negative_size=399, seed=42)
        sampler.next("text")   # CandidateSet(direction='text', captions=[17, 17, ...], images=[3, 250, ...])
    """

    def __init__(self, store: DataStore, *, negative_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if negative_size < 1:
            raise ValueError(f"negative_size must be >= 1, got {negative_size}")
        self.store = store
        self.negative_size = int(negative_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        mine = set(range(rank, store.n_images, world_size))
        self.positives = np.array([c for c in range(store.n_captions) if store.cap_img[c] in mine], dtype=np.int64)
        if len(self.positives) == 0:
            raise ValueError(f"rank {rank} of {world_size} owns no training caption: the training set has "
                             f"only {store.n_images} image(s); use fewer processes")
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
        store = self.store
        cap = self._next_positive(direction)
        img = store.cap_img[cap]
        src = store.cap_src[cap]
        if direction == "text":
            imgs = store.src_imgs[src]
            k = self._k(len(imgs) - 1, "images")
            neg = _sample_excluding(self.rng, len(imgs), [img - imgs.start], k) + imgs.start
            return CandidateSet("text", [cap] * (k + 1), [img] + neg.tolist())
        if direction == "image":
            caps = store.src_caps[src]
            own = sorted(c - caps.start for c in store.img_caps[img])
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
        token_map: ``{caption: [CLS] ids [SEP]}`` for every caption used.
        region_map: ``{image: (features, boxes)}`` for every image used.
    """

    candidates: CandidateSet
    token_map: dict
    region_map: dict

    def tokens(self, cap: int) -> torch.Tensor:
        return self.token_map[cap]

    def image(self, img: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.region_map[img]


def prepare(store: DataStore, candidates: CandidateSet) -> Prepared:
    """Decode every caption and image of ``candidates``."""
    tokens = {c: store.tokens(c) for c in dict.fromkeys(candidates.captions)}
    regions = {i: store.image(i) for i in dict.fromkeys(candidates.images)}
    return Prepared(candidates, tokens, regions)


class CandidateStream(IterableDataset):
    """The endless sequence of prepared candidate sets, directions alternating.

    Item ``i`` has direction ``DIRECTIONS[i % 2]`` (from image first, as the
    original). With ``DataLoader(num_workers=n)``, worker ``w`` runs a copy of
    the sampler (cheap: only random draws) and decodes the items ``i = w
    (mod n)``; the loader returns them in order, so the sequence is the same
    for any ``n``. The training loop keeps the authoritative sampler and
    checks every item against it.

    Args:
        store: the training data; sampler_kwargs: :class:`HardNegativeSampler` arguments;
        state: a :meth:`HardNegativeSampler.state_dict` to start from (None: fresh).
    """

    def __init__(self, store: DataStore, sampler_kwargs: dict, state: dict | None) -> None:
        super().__init__()
        self.store = store
        self.sampler_kwargs = dict(sampler_kwargs)
        self.state = state

    def __iter__(self) -> Iterator[Prepared]:
        info = get_worker_info()
        n, w = (info.num_workers, info.id) if info is not None else (1, 0)
        sampler = HardNegativeSampler(self.store, **self.sampler_kwargs)
        if self.state is not None:
            sampler.load_state_dict(self.state)
        sampler._warned = {"images", "captions"}  # the training loop's own sampler warns
        i = 0
        while True:
            for direction in DIRECTIONS:
                candidates = sampler.next(direction)
                if i % n == w:
                    yield prepare(self.store, candidates)
                i += 1
