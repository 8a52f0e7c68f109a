"""Reader of the original UNITER image-feature database (``img_db``).

An img_db directory (e.g. ``flickr30k/``) holds, for one detector setting
``(conf_th, max_bb, min_bb)``:

- ``nbb_th{conf_th}_max{max_bb}_min{min_bb}.json``: ``{img_fname: num_boxes}``
  with ``num_boxes = clip(#(conf > conf_th), min_bb, max_bb)``;
- the LMDB ``feat_th{conf_th}_max{max_bb}_min{min_bb}`` (or the same name with
  ``_compressed``): key = image file name, value = the record dict with
  ``features`` float16 ``[n, 2048]``, ``norm_bb`` float16 ``[n, 6]``
  (``[x1, y1, x2, y2, w, h]`` normalised by the image size), ``conf`` and
  ``soft_labels``, rows sorted by descending confidence; plain variant:
  msgpack with msgpack-numpy arrays, compressed variant: ``numpy.savez_compressed``
  bytes. The extra key ``__keys__`` holds the JSON list of names.

Only ``features`` and ``norm_bb`` are decoded; ``soft_labels`` (the largest
array) is skipped without being parsed.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, NamedTuple

import msgpack
import msgpack_numpy
import numpy as np
import torch

from ._lmdb import LmdbReader
from .errors import CorruptRecordError, MissingRecordError
from .txt_db import read_json_file

__all__ = [
    "ImgDb", "RegionFeatures", "box_features", "compute_num_bb", "nbb_file_name",
    "feat_db_name", "encode_img_record", "decode_img_record", "KEYS_KEY",
]

#: the LMDB key listing all image names
KEYS_KEY = "__keys__"
#: the record fields retrieval needs
_RETRIEVAL_FIELDS = ("features", "norm_bb")


def _setting(conf_th: float, max_bb: int, min_bb: int) -> str:
    return f"th{conf_th}_max{max_bb}_min{min_bb}"


def nbb_file_name(conf_th: float, max_bb: int, min_bb: int) -> str:
    """``nbb_th0.2_max100_min10.json`` for the default setting."""
    return f"nbb_{_setting(conf_th, max_bb, min_bb)}.json"


def feat_db_name(conf_th: float, max_bb: int, min_bb: int, compressed: bool) -> str:
    """``feat_th0.2_max100_min10`` (plus ``_compressed``) for the default setting."""
    return f"feat_{_setting(conf_th, max_bb, min_bb)}" + ("_compressed" if compressed else "")


def compute_num_bb(conf: np.ndarray, conf_th: float, min_bb: int, max_bb: int) -> int:
    """Number of boxes kept: ``clip(#(conf > conf_th), min_bb, max_bb)``."""
    return int(min(max_bb, max(min_bb, int((np.asarray(conf) > conf_th).sum()))))


def box_features(norm_bb: torch.Tensor) -> torch.Tensor:
    """7-d box feature ``[x1, y1, x2, y2, w, h, w*h]`` from ``norm_bb``.

    Args:
        norm_bb: ``(..., 6)`` normalised ``[x1, y1, x2, y2, w, h]``.

    Returns:
        ``(..., 7)``.

    Example:
        >>> box_features(torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.5, 0.25]]))
        tensor([[0.0000, 0.0000, 0.5000, 0.5000, 0.5000, 0.2500, 0.1250]])
    """
    if norm_bb.shape[-1] != 6:
        raise ValueError(f"norm_bb must have 6 columns [x1, y1, x2, y2, w, h], got shape {tuple(norm_bb.shape)}")
    return torch.cat([norm_bb, norm_bb[..., 4:5] * norm_bb[..., 5:6]], dim=-1)


def encode_img_record(record: dict, compressed: bool) -> bytes:
    """Bytes of one img_db value (msgpack-numpy, or ``savez_compressed`` when ``compressed``)."""
    if compressed:
        with io.BytesIO() as buf:
            np.savez_compressed(buf, **record)
            return buf.getvalue()
    return msgpack.packb(record, default=msgpack_numpy.encode, use_bin_type=True)


def decode_img_record(buf: bytes, compressed: bool,
                      fields: Iterable[str] = _RETRIEVAL_FIELDS) -> dict[str, np.ndarray]:
    """Decode only ``fields`` of one img_db value; other arrays are skipped unparsed.

    Raises:
        KeyError: a requested field is absent. Other exceptions: malformed bytes.
    """
    fields = tuple(fields)
    if compressed:
        with np.load(io.BytesIO(buf), allow_pickle=False) as npz:  # members decompress lazily
            return {name: npz[name] for name in fields}
    unpacker = msgpack.Unpacker(raw=False, object_hook=msgpack_numpy.decode,
                                max_buffer_size=max(len(buf), 1 << 20))
    unpacker.feed(buf)
    out: dict[str, np.ndarray] = {}
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if isinstance(key, bytes):
            key = key.decode("utf-8")
        if key in fields:
            out[key] = unpacker.unpack()
        else:
            unpacker.skip()
    for name in fields:
        if name not in out:
            raise KeyError(name)
    return out


class RegionFeatures(NamedTuple):
    """Decoded regions of one image (float32, ``nbb`` rows).

    Attributes:
        features: ``(nbb, img_dim)`` detector features.
        boxes: ``(nbb, 7)`` box features ``[x1, y1, x2, y2, w, h, w*h]``.
    """

    features: torch.Tensor
    boxes: torch.Tensor


class ImgDb:
    """An img_db for one detector setting: ``db[img_fname] -> RegionFeatures``.

    Args:
        path: the img_db directory (e.g. ``/img/flickr30k/``).
        conf_th, max_bb, min_bb: the setting, spelled into the file names
            exactly as given (``0.2`` -> ``th0.2``).
        compressed: read ``feat_..._compressed`` (True), ``feat_...`` (False),
            or whichever of the two exists (None).

    Attributes:
        name2nbb: ``{img_fname: number of boxes}`` from the ``nbb_*.json`` file.
        lmdb_path: the LMDB environment read.
    """

    def __init__(self, path: str | os.PathLike, *, conf_th: float = 0.2, max_bb: int = 100,
                 min_bb: int = 10, compressed: bool | None = None) -> None:
        self.path = os.fspath(path)
        if isinstance(conf_th, bool) or not isinstance(conf_th, (int, float)) or conf_th < 0:
            raise ValueError(
                f"conf_th must be a number >= 0, got {conf_th!r} (the conf_th=-1 'feat_numbb' "
                f"layout of the original code is not supported)")
        for name, value in (("max_bb", max_bb), ("min_bb", min_bb)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if compressed not in (None, True, False):
            raise ValueError(f"compressed must be True, False or None (auto), got {compressed!r}")
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"img_db directory not found: {self.path}")
        self.conf_th, self.max_bb, self.min_bb = conf_th, max_bb, min_bb

        if compressed is None:
            found = [c for c in (False, True)
                     if os.path.isdir(os.path.join(self.path, feat_db_name(conf_th, max_bb, min_bb, c)))]
            if len(found) == 2:
                raise ValueError(
                    f"img_db {self.path} holds both {feat_db_name(conf_th, max_bb, min_bb, False)} "
                    f"and its _compressed variant; choose one with compressed=True/False "
                    f"(config key 'compressed_db')")
            if not found:
                raise FileNotFoundError(
                    f"img_db feature LMDB not found: neither "
                    f"{feat_db_name(conf_th, max_bb, min_bb, False)} nor its _compressed variant "
                    f"in {self.path}")
            compressed = found[0]
        self.compressed: bool = compressed
        self.lmdb_path = os.path.join(self.path, feat_db_name(conf_th, max_bb, min_bb, compressed))
        if not os.path.isdir(self.lmdb_path):
            raise FileNotFoundError(f"img_db feature LMDB not found: {self.lmdb_path}")

        self.nbb_path = os.path.join(self.path, nbb_file_name(conf_th, max_bb, min_bb))
        name2nbb = read_json_file(self.nbb_path, "img_db box-count file")
        if not isinstance(name2nbb, dict):
            raise CorruptRecordError(f"{self.nbb_path}: expected a JSON object", db_path=self.nbb_path)
        for fname, nbb in name2nbb.items():
            if isinstance(nbb, bool) or not isinstance(nbb, int) or nbb < 1:
                raise CorruptRecordError(
                    f"{self.nbb_path}: box count of {fname!r} must be an int >= 1, got {nbb!r}",
                    db_path=self.nbb_path, key=fname)
        self.name2nbb: dict[str, int] = name2nbb
        self._reader = LmdbReader(self.lmdb_path)

    def __len__(self) -> int:
        return len(self.name2nbb)

    def __contains__(self, fname: object) -> bool:
        return fname in self.name2nbb

    @property
    def names(self) -> list[str]:
        """Image file names of the ``nbb_*.json`` file."""
        return list(self.name2nbb)

    def num_bb(self, fname: str) -> int:
        """Number of regions of ``fname`` (from the ``nbb_*.json`` file)."""
        try:
            return self.name2nbb[fname]
        except KeyError:
            raise MissingRecordError(
                f"image {fname!r} not in img_db {self.path} ({os.path.basename(self.nbb_path)})",
                db_path=self.path, key=fname) from None

    def raw(self, fname: str, fields: Iterable[str] = _RETRIEVAL_FIELDS) -> dict[str, np.ndarray]:
        """Stored arrays of ``fname`` (all rows, stored dtype), only ``fields`` decoded."""
        buf = self._reader.get(fname)
        if buf is None:
            raise MissingRecordError(f"image {fname!r} not in img_db LMDB {self.lmdb_path}",
                                     db_path=self.lmdb_path, key=fname)
        try:
            return decode_img_record(buf, self.compressed, fields)
        except KeyError as err:
            raise CorruptRecordError(
                f"record {fname!r} in img_db LMDB {self.lmdb_path} has no field {err.args[0]!r}",
                db_path=self.lmdb_path, key=fname) from None
        except Exception as err:
            raise CorruptRecordError(
                f"corrupted record {fname!r} in img_db LMDB {self.lmdb_path}: "
                f"{type(err).__name__}: {err}", db_path=self.lmdb_path, key=fname) from err

    def __getitem__(self, fname: str) -> RegionFeatures:
        """The first ``num_bb(fname)`` regions of ``fname`` as float32 tensors; a NaN or inf in them is a
        :class:`CorruptRecordError` naming the image."""
        nbb = self.num_bb(fname)
        record = self.raw(fname)
        feat, bb = record["features"], record["norm_bb"]
        if feat.ndim != 2 or feat.shape[0] < nbb or bb.shape != (feat.shape[0], 6):
            raise CorruptRecordError(
                f"record {fname!r} in img_db LMDB {self.lmdb_path}: expected features (n, D) and "
                f"norm_bb (n, 6) with n >= {nbb} boxes, got {feat.shape} and {bb.shape}",
                db_path=self.lmdb_path, key=fname)
        features = torch.from_numpy(feat[:nbb].astype(np.float32))
        boxes = box_features(torch.from_numpy(bb[:nbb].astype(np.float32)))
        for name, values in (("features", features), ("norm_bb", boxes)):
            if not bool(torch.isfinite(values).all()):
                raise CorruptRecordError(
                    f"image {fname!r} of img_db LMDB {self.lmdb_path}: its {name} hold "
                    f"{int((~torch.isfinite(values)).sum())} NaN/inf value(s); extract its features again",
                    db_path=self.lmdb_path, key=fname)
        return RegionFeatures(features, boxes)

    def close(self) -> None:
        self._reader.close()
