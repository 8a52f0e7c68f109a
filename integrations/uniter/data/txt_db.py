"""Reader of the original UNITER text database (``txt_db``).

A txt_db is a directory holding an LMDB environment and four JSON side files:

- LMDB: key = caption id (UTF-8), value =
  ``lz4.frame.compress(msgpack.dumps(example, use_bin_type=True))`` where
  ``example`` holds at least ``input_ids`` (WordPiece ids without ``[CLS]`` and
  ``[SEP]``) and ``img_fname`` (the img_db key of its image);
- ``meta.json``: ``CLS``, ``SEP``, ``MASK`` ids and ``v_range``;
- ``id2len.json``: ``{txt_id: len(input_ids)}`` (its order is the caption order);
- ``txt2img.json``: ``{txt_id: img_fname}``; ``img2txts.json``: the inverse.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import lz4.frame
import msgpack
import msgpack_numpy
import torch

from ._lmdb import LmdbReader
from .errors import CorruptRecordError, MissingRecordError

__all__ = ["TxtLmdb", "TxtDb", "encode_txt_record", "decode_txt_record", "META_KEYS"]

#: keys ``meta.json`` must hold
META_KEYS = ("CLS", "SEP", "MASK", "v_range")


def encode_txt_record(example: dict) -> bytes:
    """Bytes of one txt_db value: lz4 frame of msgpack (numpy arrays via msgpack-numpy)."""
    return lz4.frame.compress(msgpack.packb(example, default=msgpack_numpy.encode, use_bin_type=True))


def decode_txt_record(buf: bytes) -> Any:
    """Inverse of :func:`encode_txt_record` (raises on malformed bytes)."""
    return msgpack.unpackb(lz4.frame.decompress(buf), raw=False, object_hook=msgpack_numpy.decode)


def read_json_file(path: str, what: str) -> Any:
    """Load a JSON side file, with errors naming ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as err:
        raise CorruptRecordError(f"{path}: not valid JSON ({err})", db_path=path) from None


class TxtLmdb:
    """The LMDB of a txt_db: ``db[txt_id] -> example dict``.

    Args:
        path: the txt_db directory (holding ``data.mdb``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._reader = LmdbReader(self.path)

    def __getitem__(self, txt_id: str) -> dict:
        if not isinstance(txt_id, str):
            raise TypeError(f"txt_id must be a str, got {type(txt_id).__name__}")
        buf = self._reader[txt_id]
        try:
            example = decode_txt_record(buf)
        except Exception as err:
            raise CorruptRecordError(
                f"corrupted record {txt_id!r} in txt_db {self.path}: {type(err).__name__}: {err}",
                db_path=self.path, key=txt_id) from err
        if not isinstance(example, dict):
            raise CorruptRecordError(
                f"record {txt_id!r} in txt_db {self.path} decodes to {type(example).__name__}, "
                f"expected a dict", db_path=self.path, key=txt_id)
        return example

    def close(self) -> None:
        self._reader.close()


class TxtDb:
    """A txt_db with its side files: caption ids, tokens and their images.

    Args:
        path: the txt_db directory.
        max_txt_len: keep captions with ``id2len <= max_txt_len``; ``-1`` keeps
            all (evaluation), training uses 60.

    Attributes:
        ids: caption ids kept, in ``id2len.json`` order.
        id2len: ``{txt_id: number of word pieces}`` for :attr:`ids`.
        txt2img: ``{txt_id: img_fname}`` for :attr:`ids`.
        cls_id, sep_id, mask_id, v_range: from ``meta.json``.

    Example:
        >>> db = TxtDb("itm_flickr30k_test.db")            # doctest: +SKIP
        >>> db.combine_inputs(db.input_ids(db.ids[0]))      # doctest: +SKIP
        tensor([ 101, 1037, ..., 102])
    """

    def __init__(self, path: str | os.PathLike, max_txt_len: int = -1) -> None:
        if not isinstance(max_txt_len, int) or isinstance(max_txt_len, bool) or (
                max_txt_len < 1 and max_txt_len != -1):
            raise ValueError(f"max_txt_len must be an int >= 1 or -1 (no limit), got {max_txt_len!r}")
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"txt_db directory not found: {self.path}")
        self.max_txt_len = max_txt_len
        self.meta = read_json_file(os.path.join(self.path, "meta.json"), "txt_db meta.json")
        meta_path = os.path.join(self.path, "meta.json")
        for key in META_KEYS:
            if key not in self.meta:
                raise MissingRecordError(f"{meta_path}: missing key {key!r} (needs {list(META_KEYS)})",
                                         db_path=meta_path, key=key)
        for key in ("CLS", "SEP", "MASK"):
            if not isinstance(self.meta[key], int) or isinstance(self.meta[key], bool):
                raise CorruptRecordError(f"{meta_path}: key {key!r} must be an int token id, "
                                         f"got {self.meta[key]!r}", db_path=meta_path, key=key)
        self.cls_id: int = self.meta["CLS"]
        self.sep_id: int = self.meta["SEP"]
        self.mask_id: int = self.meta["MASK"]
        self.v_range: list = self.meta["v_range"]

        id2len_path = os.path.join(self.path, "id2len.json")
        id2len = read_json_file(id2len_path, "txt_db id2len.json")
        if not isinstance(id2len, dict):
            raise CorruptRecordError(f"{id2len_path}: expected a JSON object", db_path=id2len_path)
        self.id2len: dict[str, int] = {
            txt_id: n for txt_id, n in id2len.items() if max_txt_len == -1 or n <= max_txt_len
        }
        self.ids: list[str] = list(self.id2len)

        txt2img_path = os.path.join(self.path, "txt2img.json")
        txt2img = read_json_file(txt2img_path, "txt_db txt2img.json")
        missing = [txt_id for txt_id in self.ids if txt_id not in txt2img]
        if missing:
            raise MissingRecordError(
                f"{txt2img_path}: no image for caption id {missing[0]!r} "
                f"({len(missing)} caption(s) of id2len.json missing)",
                db_path=txt2img_path, key=missing[0])
        self.txt2img: dict[str, str] = {txt_id: txt2img[txt_id] for txt_id in self.ids}
        self.db = TxtLmdb(self.path)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, txt_id: str) -> dict:
        """The raw example dict of ``txt_id``."""
        return self.db[txt_id]

    @property
    def img2txts(self) -> dict[str, list[str]]:
        """``{img_fname: [txt_id, ...]}`` for the kept captions, in caption order."""
        out: dict[str, list[str]] = {}
        for txt_id in self.ids:
            out.setdefault(self.txt2img[txt_id], []).append(txt_id)
        return out

    def input_ids(self, txt_id: str) -> list[int]:
        """Word-piece ids of ``txt_id`` (without ``[CLS]``/``[SEP]``), validated."""
        example = self.db[txt_id]
        if "input_ids" not in example:
            raise CorruptRecordError(
                f"record {txt_id!r} in txt_db {self.path} has no 'input_ids' field "
                f"(fields: {sorted(example)})", db_path=self.path, key=txt_id)
        ids = example["input_ids"]
        if hasattr(ids, "tolist"):  # stored as a numpy array
            ids = ids.tolist()
        if not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise CorruptRecordError(
                f"record {txt_id!r} in txt_db {self.path}: 'input_ids' must be a list of "
                f"non-negative ints", db_path=self.path, key=txt_id)
        fname = example.get("img_fname")
        if fname is not None and fname != self.txt2img[txt_id]:
            raise CorruptRecordError(
                f"record {txt_id!r} in txt_db {self.path}: img_fname {fname!r} disagrees with "
                f"txt2img.json ({self.txt2img[txt_id]!r})", db_path=self.path, key=txt_id)
        return ids

    def combine_inputs(self, *segments: Sequence[int]) -> torch.Tensor:
        """``[CLS] + seg_1 + [SEP] + seg_2 + [SEP] ...`` as a LongTensor ``(L,)``."""
        out = [self.cls_id]
        for seg in segments:
            out.extend(seg)
            out.append(self.sep_id)
        return torch.tensor(out, dtype=torch.long)

    def close(self) -> None:
        self.db.close()
