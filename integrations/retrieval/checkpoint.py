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

import contextlib
import logging
import os
import random
import re
import socket
import tempfile
import time
from typing import Any, Iterator, Mapping

try:
    import fcntl
except ImportError:  # not POSIX: runs do not lock their output directory
    fcntl = None

import numpy as np
import torch

from . import distributed
from .objective import SetupError
from .runtime import seed_streams

__all__ = [
    "FORMAT", "CheckpointError", "checkpoint_path", "save_atomic", "find_checkpoints", "latest_checkpoint",
    "prune_checkpoints", "remove_temp_files", "load_training_checkpoint", "rng_state", "set_rng_state",
    "resume_source", "open_output_dir", "save_training_state", "restore_training_state", "save_weights",
    "read_state_dict", "check_writable", "OutputDirInUse", "RunLock", "output_dir_lock", "check_output_dir",
]

logger = logging.getLogger(__name__)

#: format tag stored in every training checkpoint
FORMAT = "iaisreg-retrieval-train/1"
#: tags that load: the current one, and the one written when the loop was part of the UNITER integration
_READABLE = (FORMAT, "iaisreg-uniter-train/1")
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
    removed and ``path`` is untouched; an ``OSError`` that names no file is
    raised again naming ``path``.
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
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError) and err.filename is None:  # e.g. a full disk: say which file
            raise OSError(err.errno, err.strerror or str(err), path) from err
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
        raise _unreadable(path, err, "training checkpoint", "a train_step_*.pt file of a fine-tuning run") from err
    if not isinstance(state, dict) or state.get("format") not in _READABLE:
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


# ----------------------------------------------------------------- a run's directory and state


def resume_source(output_dir: str, *, resume: str | None, overwrite: bool) -> str | None:
    """The checkpoint a run in ``output_dir`` would resume from (None: a fresh start); touches nothing.

    Raises ``FileExistsError`` when ``output_dir`` holds checkpoints and
    neither ``resume`` nor ``overwrite`` says what to do with them, and
    :class:`CheckpointError` for a ``resume`` directory without checkpoints.
    """
    ckpt_dir = os.path.join(output_dir, "ckpt")
    path = None
    if resume == "auto":
        path = latest_checkpoint(ckpt_dir)
    elif resume and os.path.isdir(resume):
        path = latest_checkpoint(resume)
        if path is None:
            raise CheckpointError(f"no training checkpoint (train_step_*.pt) in {resume}")
    elif resume:
        path = resume
    existing = find_checkpoints(ckpt_dir)
    if existing and path is None and not overwrite:
        raise FileExistsError(
            f"{output_dir} holds training checkpoints from an earlier run (newest: {existing[-1][1]}); pass "
            f"--resume auto to continue it or --overwrite to start over")
    return path


def open_output_dir(output_dir: str, *, resume: str | None, overwrite: bool, is_main: bool) -> str | None:
    """Prepare ``output_dir`` (``ckpt/``, ``log/``) and say which checkpoint to resume from.

    ``resume``: None, ``"auto"`` (the newest checkpoint of ``output_dir``, or a
    fresh start), a checkpoint file or a directory. Without ``resume`` a
    directory holding checkpoints is refused unless ``overwrite`` (which
    deletes them).
    """
    ckpt_dir = os.path.join(output_dir, "ckpt")
    path = resume_source(output_dir, resume=resume, overwrite=overwrite)
    existing = find_checkpoints(ckpt_dir)
    if is_main:
        os.makedirs(ckpt_dir, exist_ok=True)
        os.makedirs(os.path.join(output_dir, "log"), exist_ok=True)
        remove_temp_files(ckpt_dir)
        if overwrite and path is None:
            for _, old in existing:
                os.unlink(old)
    distributed.barrier()
    return path


def save_training_state(ckpt_dir: str, step: int, *, trainer: dict, sampler, keep: int, meta: dict) -> str | None:
    """Write ``train_step_<step>.pt`` (rank 0) with every rank's sampler and random states.

    ``trainer``: ``{"model": ..., "optimizer": ..., "scheduler": ..., "scaler": ...}``,
    objects with ``state_dict()``; ``meta``: JSON-ready facts stored alongside.
    Call it on every rank (it gathers). Returns the path on rank 0.
    """
    gathered = distributed.all_gather_objects({"rng": rng_state(), "sampler": sampler.state_dict()})
    path = None
    if distributed.rank() == 0:
        path = checkpoint_path(ckpt_dir, step)
        state = {"format": FORMAT, "step": step, "world_size": distributed.world_size(),
                 "next_direction": "image", "rank_states": gathered, **meta}
        state.update({name: obj.state_dict() for name, obj in trainer.items()})
        save_atomic(state, path)
        prune_checkpoints(ckpt_dir, keep)
    distributed.barrier()
    return path


def restore_training_state(state: dict, *, trainer: dict, sampler, seed: int) -> int:
    """Load a :func:`save_training_state` checkpoint; returns its step.

    With the same process count each rank continues its own data order and
    random streams exactly; otherwise model and optimizer continue and the
    streams restart (with a warning).
    """
    for name, obj in trainer.items():
        obj.load_state_dict(state[name])
    step = int(state["step"])
    rank, world = distributed.rank(), distributed.world_size()
    if state.get("world_size") == world and rank < len(state["rank_states"]):
        mine = state["rank_states"][rank]
        sampler.load_state_dict(mine["sampler"])
        set_rng_state(mine["rng"])
    else:
        logger.warning("checkpoint was written by %s process(es), this run has %d: model and optimizer continue, "
                       "data order and random streams restart", state.get("world_size"), world)
        seed_streams(seed, rank, salt=step + 1)
    return step


def save_weights(model: torch.nn.Module, ckpt_dir: str, tag: str) -> str | None:
    """The model's weights as a plain state dict ``model_step_<tag>.pt`` (rank 0; None elsewhere)."""
    if distributed.rank() != 0:
        return None
    path = os.path.join(ckpt_dir, f"model_step_{tag}.pt")
    save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


# ----------------------------------------------------------------- weights files, writable paths


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a weights file on the CPU: ``.safetensors``, else ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError`
    naming the file for one that cannot be read (empty, cut short, not weights)
    or that holds something else than a mapping of names to tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise many kinds for damaged files
        raise _unreadable(path, err, "checkpoint", "model weights saved by torch.save or safetensors") from err
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a state dict (str -> Tensor), got {type(state).__name__}"
                              + (f" with keys {list(state)[:5]}" if isinstance(state, Mapping) else ""))
    return dict(state)


def _unreadable(path: str, err: Exception, what: str, expected: str) -> CheckpointError:
    """The error of a file ``torch.load`` or safetensors could not read (empty, cut short, something else)."""
    text = " ".join(str(err).split())[:200] or "the file is empty or cut short"
    return CheckpointError(f"cannot read {what} {path} ({type(err).__name__}: {text}): expected {expected}")


def check_writable(path: str, flag: str, *, directory: bool = False) -> None:
    """:class:`SetupError` naming ``flag`` unless ``path`` (a file, or with ``directory`` a folder) can be
    written: not a folder where a file is expected nor the reverse, and below a folder this process may
    create files in. Creates nothing."""
    path = os.path.abspath(path)
    if directory and os.path.exists(path) and not os.path.isdir(path):
        raise SetupError(f"{flag} {path} is a file; expected a directory (or a path to create one)")
    if not directory and os.path.isdir(path):
        raise SetupError(f"{flag} {path} is a directory; expected a file name")
    parent = path if directory else os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise SetupError(f"{flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SetupError(f"{flag} {path}: cannot create files in {parent} (permission denied or read-only)")


# ----------------------------------------------------------------- one run per output directory

#: the lock file of a running fine-tuning, in its output directory
LOCK_NAME = "run.lock"


class OutputDirInUse(SetupError):
    """Another running process holds the output directory's lock."""


class RunLock:
    """``<output_dir>/run.lock``: a lock file with the PID and host of the run that holds it.

    The lock is ``fcntl.flock`` on the open file, so the kernel releases it
    when the process ends, however it ends. :meth:`release` removes the file
    first (and the output directory when taking the lock created it and
    nothing else was written); a file left behind is the lock of a process
    that died, which the next run takes over (with a warning naming it).
    """

    def __init__(self, output_dir: str) -> None:
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputDirInUse` naming the process that holds it."""
        self._created = not os.path.isdir(os.path.dirname(self.path))
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_all(fd)
                os.close(fd)
                if isinstance(err, BlockingIOError):
                    raise _in_use(os.path.dirname(self.path), holder) from None
                raise OSError(err.errno, f"cannot lock it ({err.strerror})", self.path) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:  # its holder removed it between our open and our lock
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_all(fd)
        if stale:
            logger.warning("%s was left by a run that is no longer running (%s); taking it over", self.path, stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then drop the lock."""
        if self._fd is None:
            return
        for remove, path in ((os.unlink, self.path), (os.rmdir, os.path.dirname(self.path) if self._created else None)):
            try:
                if path:
                    remove(path)
            except OSError:  # already gone, or the run wrote into its directory
                pass
        os.close(self._fd)
        self._fd = None

    def holder(self) -> str | None:
        """Who holds the lock now (None when nobody does); takes nothing."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_all(fd) or _UNNAMED
        finally:
            os.close(fd)
        return None


_UNNAMED = "a process that has not written its name yet"


def _read_all(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()


def _in_use(output_dir: str, holder: str | None) -> OutputDirInUse:
    return OutputDirInUse(f"--output-dir {output_dir} is in use by another run ({holder or _UNNAMED}); wait for it "
                          f"to end or choose another directory")


@contextlib.contextmanager
def output_dir_lock(output_dir: str, device: torch.device) -> Iterator[None]:
    """Hold ``output_dir`` for a run: rank 0 takes its :class:`RunLock` (released on exit), and every rank
    raises :class:`OutputDirInUse` when rank 0 could not. Checks first that the directory can be written
    (:func:`check_writable`)."""
    check_writable(output_dir, "--output-dir", directory=True)
    lock, error = None, None
    if distributed.rank() == 0 and fcntl is not None:
        try:
            lock = RunLock(output_dir)
            lock.acquire()
        except OutputDirInUse as err:
            lock, error = None, err
    elif distributed.rank() == 0:
        logger.warning("no fcntl on this system: %s is not locked against a second run", output_dir)
    if distributed.all_reduce_sum({"refused": float(error is not None)}, device)["refused"] > 0:
        raise error or _in_use(output_dir, "named by rank 0")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def check_output_dir(output_dir: str) -> None:
    """What :func:`output_dir_lock` would refuse, without taking or writing anything (a dry run)."""
    check_writable(output_dir, "--output-dir", directory=True)
    holder = RunLock(output_dir).holder() if fcntl is not None else None
    if holder is not None:
        raise _in_use(output_dir, holder)
