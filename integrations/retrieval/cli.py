"""What every command shares: logging set-up and one-line user errors."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Sequence

from .checkpoint import CheckpointError
from .loop import NonFiniteLossError
from .objective import SetupError

__all__ = ["USER_ERRORS", "setup_logging", "run_command"]

#: errors that are the user's to fix (a setting, a file): one line, exit status 2
USER_ERRORS: tuple[type[BaseException], ...] = (SetupError, FileExistsError, CheckpointError, FileNotFoundError)


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines with time and rank on stderr; ranks other than 0 log warnings only."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", stream=sys.stderr)


def run_command(body: Callable[[], int], *, user_errors: Sequence[type[BaseException]] = ()) -> int:
    """Run a command's body; its exit status.

    A user error (:data:`USER_ERRORS` and ``user_errors``) prints ``error:
    <message>`` and gives 2; a non-finite loss gives 1; anything else is a
    bug and raises.
    """
    try:
        return body()
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except (*USER_ERRORS, *user_errors) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
