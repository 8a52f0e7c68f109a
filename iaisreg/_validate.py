"""Argument checks on metadata only (shapes, dtypes, option strings, Python
ints), so they stay valid under ``jax.jit``, ``tf.function`` and
``torch.compile``."""
from __future__ import annotations

import numbers
from typing import Any, Sequence

__all__ = ["check_option", "check_scores", "shape_of", "check_int", "dtype_name"]


def dtype_name(dtype: Any) -> str:
    """The bare name of a dtype (``float64``), the same for every library, so
    error messages read the same on every backend (not ``torch.float64`` or
    ``<dtype: 'float64'>``)."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    return str(dtype).rsplit(".", 1)[-1]


def shape_of(x: Any) -> tuple:
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"expected an array with a shape; got {type(x).__name__}")
    return tuple(shape)


def check_option(name: str, value: Any, allowed: Sequence[str], *, func: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{func}: argument {name!r} must be one of {choices}; got {value!r}")
    return value


def check_int(name: str, value: Any, *, func: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{func}: argument {name!r} must be an int; got {type(value).__name__} {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{func}: argument {name!r} must be in [{lo}, {hi}]; got {value}")
    return value


def check_scores(attn: Any, *, func: str, name: str = "attn") -> tuple[int, int, int]:
    """Return ``(B, H, N)`` for ``attn`` of shape ``(B, H, N, N)`` or ``(B, N, N)``."""
    if attn is None or not hasattr(attn, "shape") or not hasattr(attn, "dtype"):
        raise TypeError(f"{func}: argument {name!r} must be an array of shape (B, H, N, N) or (B, N, N); got {type(attn).__name__}")
    shape = shape_of(attn)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"{func}: argument {name!r} must have shape (B, H, N, N) or (B, N, N); got shape {shape} (rank {len(shape)})"
        )
    if any(d is None for d in shape):
        raise ValueError(f"{func}: argument {name!r} must have a static shape; got {shape}")
    if shape[-1] != shape[-2]:
        raise ValueError(f"{func}: argument {name!r} must be square in its last two axes (N, N); got shape {shape}")
    if len(shape) == 4:
        b, h, n, _ = shape
    else:
        b, n, _ = shape
        h = 1
    return int(b), int(h), int(n)
