"""A small delegation layer: the generic array-API form of an operation by
default, a framework's native fused kernel where one exists (PyTorch, JAX,
TensorFlow). Frameworks are recognised from the namespace, never imported
unless the input already belongs to them."""
from __future__ import annotations

from typing import Any

import array_api_compat

__all__ = ["softmax", "log_softmax", "take_along_axis"]


def _native(xp: Any, name: str) -> Any:
    fn = getattr(xp, "_iaisreg_" + name, None)  # private namespaces (TensorFlow) provide their own
    if fn is not None:
        return fn
    if array_api_compat.is_torch_namespace(xp):
        import torch

        return (lambda x, axis: torch.softmax(x, dim=axis)) if name == "softmax" else (
            lambda x, axis: torch.log_softmax(x, dim=axis))
    if array_api_compat.is_jax_namespace(xp):
        import jax

        return (lambda x, axis: jax.nn.softmax(x, axis=axis)) if name == "softmax" else (
            lambda x, axis: jax.nn.log_softmax(x, axis=axis))
    return None


def softmax(x: Any, xp: Any, axis: int = -1) -> Any:
    """Numerically stable softmax along ``axis``."""
    fn = _native(xp, "softmax")
    if fn is not None:
        return fn(x, axis)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_softmax(x: Any, xp: Any, axis: int = -1) -> Any:
    """Numerically stable log-softmax along ``axis``."""
    fn = _native(xp, "log_softmax")
    if fn is not None:
        return fn(x, axis)
    z = x - xp.max(x, axis=axis, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def take_along_axis(x: Any, indices: Any, xp: Any, axis: int) -> Any:
    """``take_along_axis`` with non-negative ``indices`` (PyTorch: ``torch.gather``
    directly, skipping array-api-compat's index normalisation)."""
    if array_api_compat.is_torch_namespace(xp):
        import torch

        return torch.gather(x, axis, indices)
    return xp.take_along_axis(x, indices, axis=axis)
