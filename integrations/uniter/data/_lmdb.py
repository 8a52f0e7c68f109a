"""Read-only LMDB access that is safe to share, fork and pickle.

LMDB forbids opening one environment twice in a process (py-lmdb raises
"already open in this process"), also in a forked child that inherited the
parent's handle. Environments are therefore opened once per path and shared
by every reader in the process, and a forked child keeps using the inherited
handle with a transaction of its own. Databases are opened with
``lock=False``: they are read-only while we read them, so no reader table is
used and an inherited handle stays valid.
"""

from __future__ import annotations

import os
import threading

import lmdb

from .errors import MissingRecordError

# realpath -> [environment, pid that opened it, number of readers using it]
_ENVS: dict[str, list] = {}
_ENVS_LOCK = threading.RLock()  # re-entrant: a reader finalised by GC inside _acquire closes under it


def _acquire(path: str) -> lmdb.Environment:
    with _ENVS_LOCK:
        entry = _ENVS.get(path)
        if entry is None:
            env = lmdb.open(path, readonly=True, create=False, lock=False, readahead=True)
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
    """Read-only access to one LMDB environment (a directory with ``data.mdb``)."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(os.path.join(self.path, "data.mdb")):
            raise FileNotFoundError(f"not an LMDB environment (no data.mdb): {self.path}")
        self._key = os.path.realpath(self.path)
        self._pid: int | None = None
        self._txn = None

    def get(self, key: str) -> bytes | None:
        """Raw value of ``key`` or ``None`` when absent."""
        pid = os.getpid()
        if self._pid != pid:
            if self._pid is None:
                env = _acquire(self._key)
            else:  # forked: the registry entry was inherited, only the transaction is new
                env = _ENVS[self._key][0]
            self._txn = env.begin(write=False)
            self._pid = pid
        return self._txn.get(key.encode("utf-8"))

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
