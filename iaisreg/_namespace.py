"""Which array namespace an input belongs to, and the dtype the math runs in.

Frameworks are detected by looking at ``sys.modules`` (as array-api-compat
does): importing :mod:`iaisreg` never imports torch, jax or tensorflow.
"""
from __future__ import annotations

import sys
from typing import Any

import array_api_compat

__all__ = ["get_namespace", "compute_dtype", "device_of", "is_host_concrete"]


def _is_tf_tensor(x: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return False
    return isinstance(x, (tf.Tensor, tf.Variable))


def get_namespace(*arrays: Any, xp: Any = None) -> Any:
    """Return the array-API namespace of ``arrays`` (or ``xp`` if given).

    TensorFlow tensors get a small private namespace (array-api-compat does
    not cover TensorFlow); everything else goes through array-api-compat.
    """
    if xp is not None:
        return xp
    arrays = tuple(a for a in arrays if a is not None and not isinstance(a, (bool, int, float)))
    if any(_is_tf_tensor(a) for a in arrays):
        from iaisreg.tf import _namespace as tf_namespace

        return tf_namespace
    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        kinds = ", ".join(sorted({type(a).__module__ + "." + type(a).__name__ for a in arrays}))
        raise TypeError(
            f"expected arrays of one array library (NumPy, PyTorch, JAX, TensorFlow or any "
            f"array-API library); got {kinds}"
        ) from exc


def device_of(x: Any, xp: Any) -> Any:
    dev = getattr(xp, "_iaisreg_device", None)
    if dev is not None:
        return dev(x)
    return array_api_compat.device(x)


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
    arrays and eager CPU TensorFlow tensors. Used only for optional value checks."""
    mod = type(x).__module__
    if mod.startswith("numpy"):
        return True
    if mod.startswith("torch"):
        torch = sys.modules["torch"]
        try:
            compiling = torch.compiler.is_compiling()
        except AttributeError:  # pragma: no cover - old torch
            compiling = False
        return (not compiling) and x.device.type == "cpu" and not getattr(x, "is_meta", False) and type(x) is torch.Tensor
    if mod.startswith("jax") or mod.startswith("jaxlib"):
        jax = sys.modules["jax"]
        if isinstance(x, jax.core.Tracer):
            return False
        try:
            return all(d.platform == "cpu" for d in x.devices())
        except Exception:  # pragma: no cover
            return False
    if _is_tf_tensor(x):
        tf = sys.modules["tensorflow"]
        return tf.executing_eagerly() and "CPU" in (x.device or "CPU").upper()
    return False
