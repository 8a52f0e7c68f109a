"""Read-only LMDB access that is safe to share, fork and pickle.

LMDB forbids opening one environment twice in a process (py-lmdb raises
"already open in this process"), also in a forked child that inherited the
parent's handle. Environments are therefore opened once per path and shared
by every reader in the process, and a forked child keeps using the inherited
handle with a transaction of its own. Databases are opened with
``lock=False``: they are read-only while we read them, so no reader table is
used and an inherited handle stays valid.

LMDB reads its file through a memory map: a page past the end of a file cut
short (an interrupted copy) kills the process with SIGBUS, before Python
can raise anything. :func:`check_lmdb_file` therefore reads the two meta
pages at the head of ``data.mdb`` with plain reads (no map, so nothing can
fault) and refuses a file shorter than the last page they record;
``lmdb.Environment.info()`` would give the same numbers but reads the meta
pages through the map, which a file shorter than two pages does not cover.
Any ``lmdb.Error`` becomes a :class:`DamagedDbError` naming the database.
"""

from __future__ import annotations

import os
import struct
import threading

import lmdb

from .errors import DamagedDbError, MissingRecordError

#: an LMDB meta page (64-bit build): a 16-byte page header, then ``mm_magic``, ``mm_version``, ``mm_address``,
#: ``mm_mapsize``, the free and main databases (``md_pad`` (the page size in the free one), ``md_flags``,
#: ``md_depth``, four page counts and the entry count, ``md_root``), ``mm_last_pg``, ``mm_txnid``
_META = struct.Struct("=16xIIQQ" + "IHHQQQQQ" * 2 + "QQ")
_MAGIC, _VERSION = 0xBEEFC0DE, 1
#: what to do about a damaged database, in every message
_ADVICE = "the file is damaged or incomplete (an interrupted copy?): copy or build the database again"


def _meta(block: bytes) -> tuple[int, int, int] | None:
    """``(page size, last page, transaction id)`` of a meta page, None when ``block`` does not start one."""
    if len(block) < _META.size:
        return None
    fields = _META.unpack_from(block)
    if fields[0] != _MAGIC or fields[1] != _VERSION or fields[4] < _META.size:
        return None
    return fields[4], fields[-2], fields[-1]


def lmdb_extent(path: str) -> tuple[int, int]:
    """``(page size, last page)`` of the LMDB ``<path>/data.mdb``, read from its newest meta page.

    The file holds every page it uses when it is at least ``(last page + 1) *
    page size`` bytes long. :class:`DamagedDbError` when the file has no LMDB
    header or is too short to hold its two meta pages.
    """
    data = os.path.join(path, "data.mdb")
    with open(data, "rb") as handle:
        first = second = _meta(handle.read(_META.size))
        if first is not None:
            handle.seek(first[0])
            second = _meta(handle.read(_META.size))
    if first is None:
        raise DamagedDbError(f"{data} is not an LMDB file (no LMDB header in its {os.path.getsize(data)} bytes): "
                             f"{_ADVICE}", db_path=path)
    if second is None:
        raise DamagedDbError(f"{data} is cut short: {os.path.getsize(data)} bytes, not even its two meta pages; "
                             f"{_ADVICE}", db_path=path)
    psize, last_page, _ = max(first, second, key=lambda meta: meta[2])
    return psize, last_page


def check_lmdb_file(path: str) -> None:
    """:class:`DamagedDbError` unless ``<path>/data.mdb`` holds every page its newest meta page records."""
    psize, last_page = lmdb_extent(path)
    data = os.path.join(path, "data.mdb")
    size = os.path.getsize(data)
    if size < (last_page + 1) * psize:
        raise DamagedDbError(f"{data} is cut short: {size} bytes, but its last page ({last_page}) ends at byte "
                             f"{(last_page + 1) * psize}; {_ADVICE}", db_path=path)


# realpath -> [environment, pid that opened it, number of readers using it]
_ENVS: dict[str, list] = {}
_ENVS_LOCK = threading.RLock()  # re-entrant: a reader finalised by GC inside _acquire closes under it


def _acquire(path: str) -> lmdb.Environment:
    with _ENVS_LOCK:
        entry = _ENVS.get(path)
        if entry is None:
            try:
                env = lmdb.open(path, readonly=True, create=False, lock=False, readahead=True)
            except lmdb.Error as err:
                raise DamagedDbError(f"cannot open LMDB {path} ({err}): {_ADVICE}", db_path=path) from None
            entry = _ENVS[path] = [env, os.getpid(), 0]
        entry[2] += 1
        return entry[0]


def _release(path: str) -> None:
    with _ENVS_LOCK:
        entry = _ENVS.get(path)
        if entry is None:
            return
        entry[2] -= 1
        if entry[2] <= 0:
            del _ENVS[path]
            if entry[1] == os.getpid():  # never close a handle inherited through fork
                entry[0].close()


class LmdbReader:
    """Read-only access to one LMDB environment (a directory with ``data.mdb``), checked by :func:`check_lmdb_file`."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(os.path.join(self.path, "data.mdb")):
            raise FileNotFoundError(f"not an LMDB environment (no data.mdb): {self.path}")
        check_lmdb_file(self.path)
        self._key = os.path.realpath(self.path)
        self._pid: int | None = None
        self._txn = None

    def get(self, key: str) -> bytes | None:
        """Raw value of ``key`` or ``None`` when absent."""
        try:
            return self._transaction().get(key.encode("utf-8"))
        except lmdb.Error as err:
            raise DamagedDbError(f"cannot read key {key!r} of LMDB {self.path} ({err}): {_ADVICE}",
                                 db_path=self.path, key=key) from None

    def _transaction(self):
        pid = os.getpid()
        if self._pid != pid:
            if self._pid is None:
                env = _acquire(self._key)
            else:  # forked: the registry entry was inherited, only the transaction is new
                env = _ENVS[self._key][0]
            self._txn = env.begin(write=False)
            self._pid = pid
        return self._txn

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise MissingRecordError(f"key {key!r} not found in LMDB {self.path}", db_path=self.path, key=key)
        return value

    def close(self) -> None:
        """Drop this reader's transaction; the environment closes with its last reader."""
        if self._pid is not None:
            if self._pid == os.getpid():
                self._txn.abort()
            self._txn = None
            self._pid = None
            _release(self._key)

    def __getstate__(self) -> dict:
        return {"path": self.path, "_key": self._key, "_pid": None, "_txn": None}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
