"""Argument checks on metadata only (shapes, dtypes, option strings, Python
ints), so they stay valid under ``jax.jit``, ``tf.function`` and
``torch.compile``.

A size unknown while tracing (``None`` in a ``tf.function`` signature, or a
scalar tensor standing for it) is left to the trace: shape checks compare only
the sizes that are known."""
from __future__ import annotations

import numbers
from typing import Any, Sequence

__all__ = ["check_option", "check_scores", "shape_of", "check_int", "dtype_name", "known", "show", "matches"]


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


def known(d: Any) -> Any:
    """A size as far as it is known while tracing: ints (symbolic sizes of
    ``torch.compile`` included) as they are, ``None`` for an unknown size or a
    tensor standing for one."""
    if type(d) is int:  # the common case, before the slower ABC check
        return d
    return d if isinstance(d, numbers.Integral) or not hasattr(d, "dtype") else None


def show(dims: Sequence[Any]) -> tuple:
    """A shape for a message: ``(2, 5)``, with ``None`` for unknown sizes."""
    return tuple(known(d) for d in dims)


def matches(shape: Sequence[Any], *wanted: Sequence[Any]) -> bool:
    """Whether ``shape`` is one of ``wanted`` in rank and in every size known
    on both sides."""
    def same(a: Any, b: Any) -> bool:
        a, b = known(a), known(b)
        return a is None or b is None or a == b

    return any(len(shape) == len(w) and all(same(a, b) for a, b in zip(shape, w)) for w in wanted)


def check_option(name: str, value: Any, allowed: Sequence[str], *, func: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{func}: argument {name!r} must be one of {choices}; got {value!r}")
    return value


def check_int(name: str, value: Any, *, func: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{func}: argument {name!r} must be an int; got {type(value).__name__} {value!r}")
    value = int(value)
    high = known(high)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{func}: argument {name!r} must be in [{lo}, {hi}]; got {value}")
    return value


def check_scores(attn: Any, *, func: str, name: str = "attn") -> tuple[Any, Any, Any]:
    """Return ``(B, H, N)`` for ``attn`` of shape ``(B, H, N, N)`` or
    ``(B, N, N)``, each usable in shape arguments (see
    :func:`iaisreg._ops.sizes`). Sizes unknown while tracing are not checked;
    a known size of 0 is an error."""
    if attn is None or not hasattr(attn, "shape") or not hasattr(attn, "dtype"):
        raise TypeError(f"{func}: argument {name!r} must be an array of shape (B, H, N, N) or (B, N, N); got {type(attn).__name__}")
    shape = shape_of(attn)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"{func}: argument {name!r} must have shape (B, H, N, N) or (B, N, N); got shape {shape} (rank {len(shape)})"
        )
    if not matches(shape[-1:], shape[-2:-1]):
        raise ValueError(f"{func}: argument {name!r} must be square in its last two axes (N, N); got shape {shape}")
    if any(known(d) == 0 for d in shape):
        raise ValueError(f"{func}: argument {name!r} must have at least one sample, head and position "
                         f"(B, H, N >= 1); got shape {shape}")
    from ._ops import sizes

    dims = sizes(attn)
    return (dims[0], dims[1], dims[2]) if len(dims) == 4 else (dims[0], 1, dims[1])
