"""Which array namespace an input belongs to, and the dtype the math runs in.

Frameworks are recognised through the registry of :mod:`iaisreg._ops`, which
looks only at ``sys.modules`` (as array-api-compat does): importing
:mod:`iaisreg` never imports torch, jax or tensorflow.
"""
from __future__ import annotations

from typing import Any

import array_api_compat

from ._ops import FRAMEWORKS, framework_of_array, framework_of_namespace, native, private_namespace

__all__ = ["get_namespace", "compute_dtype", "is_host_concrete", "shapes_from_values", "as_array"]


def get_namespace(*arrays: Any, xp: Any = None) -> Any:
    """Return the array-API namespace of ``arrays`` (or ``xp`` if given).

    Arrays of a framework with a private namespace in the registry
    (TensorFlow) get that namespace; everything else goes through
    array-api-compat. NumPy arrays given with arrays of another library
    belong to that library (they are converted where they are used, see
    :func:`as_array`).
    """
    if xp is not None:
        return xp
    arrays = tuple(a for a in arrays if a is not None and not isinstance(a, (bool, int, float)))
    others = tuple(a for a in arrays if not _is_numpy(a))
    arrays = others or arrays
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


def _is_numpy(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "numpy"


def _library(framework: str | None, fallback: str) -> str:
    """A library's name: its registry module (``torch``, ``jax``, ``tensorflow``) or ``fallback``."""
    return FRAMEWORKS[framework].module if framework is not None else fallback.split(".")[0]


def as_array(x: Any, *, xp: Any, dev: Any, name: str, func: str) -> Any:
    """``x`` as an array of namespace ``xp`` (the scores' library) on ``dev``:
    arrays of that library as they are, NumPy arrays converted (as every
    framework's own functions accept them); anything else, e.g. a list or an
    array of a third library, is a ``TypeError`` naming the argument."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{func}: argument {name!r} must be an array (NumPy or the scores' library); "
                        f"got {type(x).__name__}")
    mine, theirs = framework_of_namespace(xp), framework_of_array(x)
    if mine == theirs:
        return x
    if mine is not None and _is_numpy(x):
        return xp.asarray(x, device=dev)
    scores = _library(mine, getattr(xp, "__name__", "numpy").split(".")[-1])
    raise TypeError(f"{func}: argument {name!r} is a {_library(theirs, type(x).__module__)} array but the scores "
                    f"are {scores} arrays; "
                    f"pass arrays from one library (NumPy arrays are converted)")


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
