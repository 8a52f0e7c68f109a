"""Errors raised by the database readers; each names the database and the key."""

from __future__ import annotations

from ...retrieval.protocol import DataError

__all__ = ["DbError", "MissingRecordError", "CorruptRecordError", "DamagedDbError"]


class DbError(DataError):
    """A txt_db or img_db could not serve a record.

    Attributes:
        db_path: the database (directory or LMDB) that was read (None when
            re-raised from a data worker).
        key: the record key (caption id, image file name or side-file key).
    """

    def __init__(self, message: str, *, db_path: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.message = self.args[0]
        self.db_path = db_path
        self.key = key

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return self.message


class MissingRecordError(DbError, KeyError):
    """The key is absent from the database or one of its side files."""


class CorruptRecordError(DbError, ValueError):
    """The record exists but cannot be decoded, or its content is inconsistent."""


class DamagedDbError(DbError):
    """An LMDB environment that cannot be read safely: cut short, or not an LMDB at all."""
