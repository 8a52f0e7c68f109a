"""Training checkpoints that survive crashes and resume exactly.

A checkpoint ``<output_dir>/ckpt/train_step_<step>.pt`` is one ``torch.save``
file holding the model (no DDP prefix), optimizer, LR scheduler and gradient
scaler states, the step, the direction of the next group, and for **every
rank** its random states (Python, NumPy, torch CPU and CUDA) and its sampler
state (epoch and position of both directions, negative stream). Everything is a tensor or a plain Python value, so it loads
with ``torch.load(weights_only=True)``.

Writes are atomic: the bytes go to a temporary file in the same directory
(``.train_step_<step>.pt.<random>.tmp``), which is flushed, ``fsync``-ed and
then renamed over the final name with ``os.replace``; the directory is
``fsync``-ed too. A crash mid-write leaves at most a temporary file (removed
by :func:`remove_temp_files` at the next start) and never a partial file
under a final name; the previous checkpoints stay intact. Only after the new
file is in place are the oldest ones beyond ``keep`` deleted.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from typing import Any

import numpy as np
import torch

__all__ = [
    "FORMAT", "CheckpointError", "checkpoint_path", "save_atomic", "find_checkpoints", "latest_checkpoint",
    "prune_checkpoints", "remove_temp_files", "load_training_checkpoint", "rng_state", "set_rng_state",
]

logger = logging.getLogger(__name__)

#: format tag stored in every training checkpoint
FORMAT = "iaisreg-uniter-train/1"
_NAME_RE = re.compile(r"^train_step_(\d+)\.pt$")
_TMP_RE = re.compile(r"^\.train_step_\d+\.pt\..*\.tmp$")


class CheckpointError(RuntimeError):
    """A training checkpoint is missing, unreadable or not one of ours."""


def checkpoint_path(ckpt_dir: str, step: int) -> str:
    """``<ckpt_dir>/train_step_<step, 7 digits>.pt``."""
    return os.path.join(ckpt_dir, f"train_step_{step:07d}.pt")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. not supported on this platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _serialize(obj: Any, handle) -> None:
    """Write ``obj`` to the open binary file ``handle`` (a seam for tests)."""
    torch.save(obj, handle)


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``.

    On any exception (including ``KeyboardInterrupt``) the temporary file is
    removed and ``path`` is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            _serialize(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def find_checkpoints(ckpt_dir: str) -> list[tuple[int, str]]:
    """``[(step, path), ...]`` of the training checkpoints in ``ckpt_dir``, oldest first."""
    if not os.path.isdir(ckpt_dir):
        return []
    found = []
    for name in os.listdir(ckpt_dir):
        m = _NAME_RE.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(ckpt_dir, name)))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str) -> str | None:
    """Path of the newest training checkpoint in ``ckpt_dir``, or None."""
    found = find_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def prune_checkpoints(ckpt_dir: str, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest training checkpoints (``keep <= 0``: keep all)."""
    if keep <= 0:
        return []
    removed = []
    for _, path in find_checkpoints(ckpt_dir)[:-keep]:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def remove_temp_files(ckpt_dir: str) -> list[str]:
    """Remove temporary files left by a crash during :func:`save_atomic`."""
    removed = []
    if os.path.isdir(ckpt_dir):
        for name in os.listdir(ckpt_dir):
            if _TMP_RE.match(name):
                try:
                    os.unlink(os.path.join(ckpt_dir, name))
                    removed.append(name)
                except OSError:
                    pass
    return removed


def load_training_checkpoint(path: str) -> dict:
    """Read a training checkpoint (``weights_only=True``) and check its format tag."""
    if not os.path.isfile(path):
        raise CheckpointError(f"training checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read training checkpoint {path}: {type(err).__name__}: {err}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a training checkpoint of this program (format {FORMAT!r}); a plain model "
            f"state dict is loaded with --checkpoint instead")
    return state


def rng_state() -> dict:
    """This process's random states as tensors and plain Python values."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("checkpoint holds %d CUDA RNG states, this machine has %d devices; "
                           "CUDA random state not restored", len(cuda), torch.cuda.device_count())
