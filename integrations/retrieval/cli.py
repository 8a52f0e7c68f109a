"""What every command shares: logging set-up, the parser of plain commands, one-line user errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Callable, Mapping

from ..entities import FlickrEntitiesError
from .checkpoint import CheckpointError, check_writable
from .evaluation import NonFiniteScoreError
from .loop import NonFiniteLossError
from .objective import SetupError
from .options import CommandParser
from .protocol import DataError

__all__ = ["USER_ERRORS", "CommandParser", "setup_logging", "run_command", "check_outputs", "write_text"]

#: errors that are the user's to fix (a setting, a file, the data): one line, exit status 2. ``OSError`` covers
#: files that cannot be read or written (missing, a directory where a file is expected, no space left);
#: ``FlickrEntitiesError`` a malformed Flickr30k Entities file (it names the file and the line).
USER_ERRORS: tuple[type[BaseException], ...] = (SetupError, CheckpointError, DataError, FlickrEntitiesError, OSError)
#: a run that stopped on a NaN/inf: one line, exit status 1
NON_FINITE = (NonFiniteLossError, NonFiniteScoreError)


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines with time and rank on stderr; ranks other than 0 log warnings only."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", stream=sys.stderr)


def run_command(body: Callable[[], int], *, debug: bool = False) -> int:
    """Run a command's body; its exit status.

    A user error (:data:`USER_ERRORS`) prints ``error: <message>`` and gives
    2; a non-finite loss or score gives 1 the same way; with ``debug`` (the
    commands' ``--debug``) their traceback comes first. Anything else is a
    bug: its traceback is printed, followed by a line saying so, and the
    status is 1.
    """
    try:
        return body()
    except (*NON_FINITE, *USER_ERRORS) as err:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(err)}", file=sys.stderr, flush=True)
        return 1 if isinstance(err, NON_FINITE) else 2
    except Exception as err:
        traceback.print_exc()
        print(f"error: unexpected {type(err).__name__}; this is a bug, not a problem with your settings or files: "
              f"please report it with the traceback above and the command line", file=sys.stderr, flush=True)
        return 1


def check_outputs(parser: argparse.ArgumentParser, paths: Mapping[str, str | None]) -> None:
    """A usage error (``parser.error``) unless every path given (``{flag: path}``) can be written; checked before
    any work, so that a long run does not fail at its very end."""
    for flag, path in paths.items():
        if path:
            try:
                check_writable(path, flag)
            except SetupError as err:
                parser.error(str(err))


def write_text(path: str, text: str) -> None:
    """Write ``text`` to the file ``path``, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line; an ``OSError`` from the system names its file."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())
