"""How a run executes: processes, threads, determinism, precision, seeds and signals."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import sys
import threading
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from . import distributed
from .objective import SetupError

__all__ = ["AMP_DTYPES", "StopRequest", "process", "resolve_precision", "autocast_factory", "seed_everything",
           "seed_streams"]

#: autocast dtype of each precision (fp32: no autocast)
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@contextlib.contextmanager
def process(device: str | None, *, threads: int | None = None,
            deterministic: bool = False) -> Iterator[distributed.DistContext]:
    """Join the ``torchrun`` group (if any) with these torch settings; leave cleanly after.

    On a normal exit the group is left with a garbage collection and a
    barrier (without them a few percent of gloo runs crash at exit); after an
    error it is destroyed at once (another process may never reach a
    barrier). Threads and determinism are restored.
    """
    if deterministic and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    threads_before, was_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    ctx = distributed.init_from_env(device)
    clean = False
    try:
        if threads:
            torch.set_num_threads(threads)
        if deterministic:
            torch.use_deterministic_algorithms(True)
        yield ctx
        clean = True
    finally:
        gc.collect()
        if clean or not ctx.owns_group:
            distributed.teardown(ctx)
        elif dist.is_initialized():
            dist.destroy_process_group()
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads_before)


def resolve_precision(precision: str, fp16: bool, device: torch.device) -> str:
    """The precision a run uses; ``fp16`` needs CUDA.

    ``auto``: mixed precision on CUDA when the recipe asks for it (the config's
    ``fp16`` key): bf16 where the GPU supports it (no loss scaling needed),
    else fp16 with a gradient scaler; fp32 otherwise (and on the CPU).
    """
    if precision == "auto":
        if device.type != "cuda" or not fp16:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise SetupError("precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    return precision


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager] | None:
    """A factory of the autocast context of ``precision`` (None for fp32)."""
    dtype = AMP_DTYPES.get(precision)
    return None if dtype is None else (lambda: torch.autocast(device.type, dtype=dtype))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch with ``seed`` (the same on every process: model initialisation)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_streams(seed: int, rank: int, salt: int = 0) -> None:
    """Seed this rank's Python, NumPy and torch streams (distinct per rank)."""
    s = np.random.SeedSequence([seed, rank, salt]).generate_state(3)
    random.seed(int(s[0]))
    np.random.seed(int(s[1]))
    torch.manual_seed(int(s[2]))


class StopRequest:
    """SIGTERM/SIGINT -> stop at the next step boundary; a second signal acts at once.

    Use as a context manager: the handlers are installed on entry (main
    thread only) and the previous ones restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: give up on the clean stop
            self.restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"\n[rank {distributed.rank()}] received {signal.Signals(signum).name}: saving a checkpoint at the "
              f"end of this step (send it again to stop at once)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, TypeError):
                pass
        self._previous.clear()
