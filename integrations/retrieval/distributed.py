"""Small helpers for ``torchrun``: process group from the environment, teardown, gathers."""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .objective import SetupError

__all__ = ["DistContext", "default_device", "init_from_env", "teardown", "rank", "backend", "world_size",
           "gather_columns", "all_reduce_sum", "all_gather_objects", "barrier"]


@dataclass
class DistContext:
    """Where this process stands.

    Attributes:
        rank, world_size, local_rank: as set by ``torchrun`` (0, 1, 0 otherwise).
        device: the device this process should use.
        owns_group: True when :func:`init_from_env` created the process group
            (and :func:`teardown` should destroy it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool


def rank() -> int:
    """Rank in the default group, 0 without one."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def backend() -> str | None:
    """Backend of the default group (``"nccl"``, ``"gloo"``), None without one."""
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    """Size of the default group, 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.

    Raises :class:`SetupError` naming ``--device`` for a string torch does not read
    as a device, or a CUDA device this machine does not have.
    """
    if device is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError):
        raise SetupError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if out.type == "cuda" and (out.index or 0) >= torch.cuda.device_count():
        raise SetupError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return out


def init_from_env(device: str | torch.device | None = None, *,
                  timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by ``torchrun``'s environment variables.

    Under ``torchrun`` (even with one process) or with ``WORLD_SIZE > 1``,
    and no group yet, initialises one: NCCL when the process uses a CUDA
    device, gloo otherwise. ``device`` defaults to ``cuda:LOCAL_RANK`` when
    CUDA is available, else the CPU.
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "TORCHELASTIC_RUN_ID" in os.environ and "MASTER_ADDR" in os.environ
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = default_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if (env_world > 1 or launched) and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        owns = True
    return DistContext(rank(), world_size(), local_rank, device, owns)


def teardown(ctx: DistContext) -> None:
    """Leave the group cleanly: collect garbage, wait for everyone, destroy.

    Without the explicit ``gc.collect()`` + barrier, a few percent of gloo runs
    crash while the interpreter exits.
    """
    if ctx.owns_group and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def gather_columns(shard: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Reassemble a matrix whose columns were dealt round-robin over the ranks.

    Rank ``r`` holds columns ``r, r + W, r + 2W, ...`` of an ``(R, n_cols)``
    matrix as ``shard`` ``(R, len(range(r, n_cols, W)))``. Every rank gets the
    full ``(R, n_cols)`` matrix on ``shard.device``.
    """
    world = world_size()
    if world == 1:
        return shard
    width = -(-n_cols // world)  # ceil
    padded = shard.new_zeros(shard.shape[0], width)
    padded[:, : shard.shape[1]] = shard
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    full = shard.new_empty(shard.shape[0], n_cols)
    for r, part in enumerate(parts):
        count = len(range(r, n_cols, world))
        full[:, r::world] = part[:, :count]
    return full


def all_reduce_sum(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum named numbers over the processes (one collective; the input itself without a group)."""
    if world_size() == 1:
        return dict(values)
    t = torch.tensor(list(values.values()), dtype=torch.float64,
                     device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return dict(zip(values, t.tolist()))


def all_gather_objects(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if world_size() == 1:
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every process (nothing to do without a group)."""
    if world_size() > 1:
        dist.barrier()
