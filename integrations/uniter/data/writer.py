"""Writers producing txt_db / img_db directories in the original byte format.

Used by the tests and the synthetic demo; real data comes from the original
preprocessing. What these functions write is read unchanged by the original
UNITER code and by :class:`~integrations.uniter.data.TxtDb` /
:class:`~integrations.uniter.data.ImgDb`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import lmdb
import numpy as np

from .img_db import KEYS_KEY, compute_num_bb, encode_img_record, feat_db_name, nbb_file_name
from .txt_db import META_KEYS, encode_txt_record

__all__ = ["write_txt_db", "write_img_db"]

_PAGE = 4096


def _write_lmdb(path: str, items: Iterable[tuple[str, bytes]]) -> None:
    """Create the LMDB environment ``path`` holding ``items`` (keys UTF-8 encoded)."""
    if os.path.exists(os.path.join(path, "data.mdb")):
        raise FileExistsError(f"refusing to overwrite the existing LMDB {path}")
    encoded = [(key.encode("utf-8"), value) for key, value in items]
    # Large values live on their own overflow pages; leave generous head room.
    need = sum((len(k) + len(v)) // _PAGE + 2 for k, v in encoded) * _PAGE
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=2 * need + (8 << 20), subdir=True, create=True)
    try:
        with env.begin(write=True) as txn:
            for key, value in encoded:
                txn.put(key, value)
    finally:
        env.close()


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle)


def write_txt_db(path: str | os.PathLike, examples: Mapping[str, Mapping[str, Any]],
                 meta: Mapping[str, Any]) -> None:
    """Write a txt_db directory.

    Args:
        path: directory to create (e.g. ``itm_flickr30k_test.db``); it must not
            already hold an LMDB.
        examples: ``{txt_id: example}``; each example needs ``input_ids`` (ids
            without ``[CLS]``/``[SEP]``) and ``img_fname``; other fields are
            stored as given. Insertion order becomes the caption order.
        meta: contents of ``meta.json``; must hold ``CLS``, ``SEP``, ``MASK``,
            ``v_range``.

    Writes the LMDB (``lz4(msgpack(example))`` values) plus ``meta.json``,
    ``id2len.json``, ``txt2img.json`` and ``img2txts.json``.
    """
    path = os.fspath(path)
    if not isinstance(meta, Mapping) or any(key not in meta for key in META_KEYS):
        raise ValueError(f"meta must be a mapping with keys {list(META_KEYS)}, got {meta!r}")
    if not isinstance(examples, Mapping):
        raise TypeError(f"examples must be a mapping txt_id -> example, got {type(examples).__name__}")
    id2len: dict[str, int] = {}
    txt2img: dict[str, str] = {}
    img2txts: dict[str, list[str]] = {}
    records = []
    for txt_id, example in examples.items():
        if not isinstance(txt_id, str):
            raise TypeError(f"examples: caption ids must be str, got {type(txt_id).__name__} {txt_id!r}")
        if not isinstance(example, Mapping) or "input_ids" not in example or "img_fname" not in example:
            raise ValueError(f"examples[{txt_id!r}] must be a mapping with 'input_ids' and 'img_fname'")
        fname = example["img_fname"]
        if not isinstance(fname, str):
            raise TypeError(f"examples[{txt_id!r}]['img_fname'] must be a str, got {type(fname).__name__}")
        id2len[txt_id] = len(example["input_ids"])
        txt2img[txt_id] = fname
        img2txts.setdefault(fname, []).append(txt_id)
        records.append((txt_id, encode_txt_record(dict(example))))
    _write_lmdb(path, records)
    _write_json(os.path.join(path, "meta.json"), dict(meta))
    _write_json(os.path.join(path, "id2len.json"), id2len)
    _write_json(os.path.join(path, "txt2img.json"), txt2img)
    _write_json(os.path.join(path, "img2txts.json"), img2txts)


def write_img_db(path: str | os.PathLike, images: Mapping[str, Mapping[str, np.ndarray]],
                 conf_th: float, max_bb: int, min_bb: int, *, compressed: bool = False) -> dict[str, int]:
    """Write one detector setting of an img_db directory.

    Args:
        path: the img_db directory (created if needed; may hold other settings
            or the other variant, but not this LMDB already).
        images: ``{img_fname: record}``; each record needs ``features``
            ``(n, D)``, ``norm_bb`` ``(n, 6)`` and ``conf`` ``(n,)`` or
            ``(n, 1)``, rows sorted by descending ``conf``; ``soft_labels``
            ``(n, C)`` and other arrays are stored too. Floating arrays are
            stored as float16, as in the released databases.
        conf_th, max_bb, min_bb: the setting, spelled into the file names.
        compressed: write ``feat_..._compressed`` (``savez_compressed`` values)
            instead of ``feat_...`` (msgpack-numpy values).

    Returns:
        ``{img_fname: number of boxes}``, also written to ``nbb_th..._max..._min....json``.
        Every image needs at least that many rows.
    """
    path = os.fspath(path)
    if not isinstance(images, Mapping):
        raise TypeError(f"images must be a mapping img_fname -> record, got {type(images).__name__}")
    name2nbb: dict[str, int] = {}
    records = []
    for fname, record in images.items():
        if not isinstance(fname, str) or fname == KEYS_KEY:
            raise ValueError(f"images: invalid image name {fname!r}")
        missing = [k for k in ("features", "norm_bb", "conf") if k not in record]
        if missing:
            raise ValueError(f"images[{fname!r}] lacks {missing} (needs features, norm_bb, conf)")
        stored = {k: (np.asarray(v).astype(np.float16) if np.issubdtype(np.asarray(v).dtype, np.floating)
                      else np.asarray(v))
                  for k, v in record.items()}
        n = stored["features"].shape[0]
        if stored["features"].ndim != 2 or stored["norm_bb"].shape != (n, 6):
            raise ValueError(f"images[{fname!r}]: need features (n, D) and norm_bb (n, 6), got "
                             f"{stored['features'].shape} and {stored['norm_bb'].shape}")
        conf = stored["conf"].reshape(-1, 1)
        if conf.shape[0] != n:
            raise ValueError(f"images[{fname!r}]: conf has {conf.shape[0]} rows, features {n}")
        if np.any(np.diff(conf[:, 0].astype(np.float32)) > 0):
            raise ValueError(f"images[{fname!r}]: rows must be sorted by descending conf")
        stored["conf"] = conf
        nbb = compute_num_bb(conf, conf_th, min_bb, max_bb)
        if nbb > n:
            raise ValueError(f"images[{fname!r}]: {nbb} boxes kept by the setting but only {n} rows")
        name2nbb[fname] = nbb
        records.append((fname, encode_img_record(stored, compressed)))
    records.append((KEYS_KEY, json.dumps(list(name2nbb)).encode("utf-8")))
    os.makedirs(path, exist_ok=True)
    _write_lmdb(os.path.join(path, feat_db_name(conf_th, max_bb, min_bb, compressed)), records)
    _write_json(os.path.join(path, nbb_file_name(conf_th, max_bb, min_bb)), name2nbb)
    return name2nbb
