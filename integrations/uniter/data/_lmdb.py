"""A read-only LMDB handle that reopens itself in forked processes."""

from __future__ import annotations

import os

import lmdb

from .errors import MissingRecordError


class LmdbReader:
    """Read-only access to one LMDB environment (a directory with ``data.mdb``).

    The environment is opened lazily and again in any new process (LMDB handles
    must not cross ``fork``), so readers can be handed to DataLoader workers.
    """

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(os.path.join(self.path, "data.mdb")):
            raise FileNotFoundError(f"not an LMDB environment (no data.mdb): {self.path}")
        self._pid: int | None = None
        self._env = None
        self._txn = None

    def _open(self) -> None:
        self._env = lmdb.open(self.path, readonly=True, create=False, lock=False,
                              readahead=True)
        self._txn = self._env.begin(write=False)
        self._pid = os.getpid()

    def get(self, key: str) -> bytes | None:
        """Raw value of ``key`` or ``None`` when absent."""
        if self._pid != os.getpid():
            self._open()
        return self._txn.get(key.encode("utf-8"))

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise MissingRecordError(f"key {key!r} not found in LMDB {self.path}", db_path=self.path, key=key)
        return value

    def close(self) -> None:
        """Release the environment (it reopens on the next read)."""
        if self._env is not None and self._pid == os.getpid():
            self._txn.abort()
            self._env.close()
        self._env = self._txn = self._pid = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_pid": None, "_env": None, "_txn": None}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
