"""Which array namespace an input belongs to, and the dtype the math runs in.

Frameworks are recognised through the registry of :mod:`iaisreg._ops`, which
looks only at ``sys.modules`` (as array-api-compat does): importing
:mod:`iaisreg` never imports torch, jax or tensorflow.
"""
from __future__ import annotations

from typing import Any

import array_api_compat

from ._ops import native, private_namespace

__all__ = ["get_namespace", "compute_dtype", "is_host_concrete", "shapes_from_values"]


def get_namespace(*arrays: Any, xp: Any = None) -> Any:
    """Return the array-API namespace of ``arrays`` (or ``xp`` if given).

    Arrays of a framework with a private namespace in the registry
    (TensorFlow) get that namespace; everything else goes through
    array-api-compat.
    """
    if xp is not None:
        return xp
    arrays = tuple(a for a in arrays if a is not None and not isinstance(a, (bool, int, float)))
    for a in arrays:
        private = private_namespace(a)
        if private is not None:
            return private
    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        kinds = ", ".join(sorted({type(a).__module__ + "." + type(a).__name__ for a in arrays}))
        raise TypeError(
            f"expected arrays of one array library (NumPy, PyTorch, JAX, TensorFlow or any "
            f"array-API library); got {kinds}"
        ) from exc


def compute_dtype(dtype: Any, xp: Any, *, name: str = "attn", func: str = "iais") -> Any:
    """float16/bfloat16 are computed in float32; float32/float64 stay as they are."""
    if not xp.isdtype(dtype, "real floating"):
        from ._validate import dtype_name

        raise TypeError(f"{func}: argument {name!r} must have a real floating dtype; got {dtype_name(dtype)}")
    if dtype == xp.float64 or dtype == xp.float32:
        return dtype
    return xp.float32


def is_host_concrete(x: Any) -> bool:
    """True when ``x``'s values can be read without a device synchronisation or
    breaking a trace: NumPy arrays, eager CPU torch tensors, concrete CPU JAX
    arrays and eager CPU TensorFlow tensors (each framework's ``host_concrete``
    op in the registry). Used only for optional value checks."""
    if type(x).__module__.startswith("numpy"):
        return True
    fn = native("host_concrete", array=x)
    return fn is not None and bool(fn(x))


def shapes_from_values(x: Any) -> bool:
    """True when a shape may follow ``x``'s values at no cost: the values are on
    the host (:func:`is_host_concrete`) and a new shape neither breaks a trace
    nor compiles anything (not JAX, whose eager operations compile once per
    shape: the registry's ``shapes_from_values`` op says no)."""
    if not is_host_concrete(x):
        return False
    fn = native("shapes_from_values", array=x)
    return True if fn is None else bool(fn(x))
