"""A small private array namespace for TensorFlow tensors.

array-api-compat does not cover TensorFlow, so this module provides exactly
the subset of the Python array API standard that the :mod:`iaisreg` core
uses, on top of ``tf``: creation (``asarray``, ``zeros``, ``zeros_like``,
``ones``, ``arange``), elementwise math (``exp``, ``log``, ``maximum``,
``where``, ``clip``), reductions (``sum``, ``mean``, ``max``, ``any``,
``argmax``), ``take_along_axis`` (through ``tf.gather(..., batch_dims=...)``),
``matmul``/``matrix_transpose``, ``broadcast_to``, ``astype``, the dtype
objects, ``isdtype`` and ``finfo``. TensorFlow's native ops (``tf.nn``
softmaxes, the device of a tensor) are in the framework registry of
:mod:`iaisreg._ops`, as PyTorch's and JAX's are.

Every function works in eager mode, inside ``tf.function`` and under
``tf.GradientTape``. TensorFlow does not promote dtypes in binary
operations, so Python scalars are converted to the other operand's dtype.
It is private: the core reaches it through :func:`iaisreg._namespace.get_namespace`.
"""
from __future__ import annotations

import builtins as _builtins
import contextlib
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from iaisreg._ops import sizes

__all__ = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
    "asarray", "zeros", "zeros_like", "ones", "ones_like", "arange",
    "exp", "log", "abs", "maximum", "minimum", "where", "clip",
    "sum", "mean", "max", "min", "any", "all", "argmax",
    "take_along_axis", "matmul", "matrix_transpose", "broadcast_to", "astype", "reshape", "concat",
    "isdtype", "finfo", "iinfo",
]

bool = tf.bool  # noqa: A001 - the array API name
int8, int16, int32, int64 = tf.int8, tf.int16, tf.int32, tf.int64
uint8, uint16, uint32, uint64 = tf.uint8, tf.uint16, tf.uint32, tf.uint64
float16, bfloat16, float32, float64 = tf.float16, tf.bfloat16, tf.float32, tf.float64
complex64, complex128 = tf.complex64, tf.complex128

_KINDS = {
    "bool": (tf.bool,),
    "signed integer": (tf.int8, tf.int16, tf.int32, tf.int64),
    "unsigned integer": (tf.uint8, tf.uint16, tf.uint32, tf.uint64),
    "real floating": (tf.float16, tf.bfloat16, tf.float32, tf.float64),
    "complex floating": (tf.complex64, tf.complex128),
}
_KINDS["integral"] = _KINDS["signed integer"] + _KINDS["unsigned integer"]
_KINDS["numeric"] = _KINDS["integral"] + _KINDS["real floating"] + _KINDS["complex floating"]


# ----------------------------------------------------------------- helpers
def _device_scope(device: Any) -> Any:
    return tf.device(device) if device else contextlib.nullcontext()


def _like(value: Any, other: Any) -> Any:
    """``value`` as a tensor, Python scalars in ``other``'s dtype."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value
    dtype = other.dtype if isinstance(other, (tf.Tensor, tf.Variable)) else None
    return tf.convert_to_tensor(value, dtype=dtype)


def _axis(axis: Any) -> Any:
    return list(axis) if isinstance(axis, tuple) else axis


# ----------------------------------------------------------------- dtypes
def isdtype(dtype: Any, kind: Any) -> Any:
    """Array API ``isdtype``: ``kind`` is a dtype, a kind name or a tuple of those."""
    if isinstance(kind, tuple):
        return _builtins.any(isdtype(dtype, k) for k in kind)
    dtype = tf.as_dtype(dtype)
    if isinstance(kind, str):
        if kind not in _KINDS:
            raise ValueError(f"isdtype: unknown kind {kind!r}")
        return dtype in _KINDS[kind]
    return dtype == tf.as_dtype(kind)


class _FInfo:
    def __init__(self, dtype: Any) -> None:
        dtype = tf.as_dtype(dtype)
        import ml_dtypes

        info = ml_dtypes.finfo(dtype.as_numpy_dtype)
        self.bits = int(info.bits)
        self.eps = float(info.eps)
        self.max = float(info.max)
        self.min = float(info.min)
        self.smallest_normal = float(info.smallest_normal)
        self.dtype = dtype


def finfo(type: Any) -> _FInfo:  # noqa: A002 - the array API name
    dtype = getattr(type, "dtype", type)
    if not isdtype(dtype, "real floating"):
        raise TypeError(f"finfo: expected a real floating dtype; got {tf.as_dtype(dtype).name}")
    return _FInfo(dtype)


def iinfo(type: Any) -> Any:  # noqa: A002
    dtype = tf.as_dtype(getattr(type, "dtype", type))
    return np.iinfo(dtype.as_numpy_dtype)


# ----------------------------------------------------------------- creation
def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
    with _device_scope(device):
        if isinstance(obj, (tf.Tensor, tf.Variable)):
            x = tf.convert_to_tensor(obj)
            return x if dtype is None or x.dtype == dtype else tf.cast(x, dtype)
        return tf.convert_to_tensor(obj, dtype=dtype)


def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> Any:
    with _device_scope(device):
        return tf.zeros(shape, dtype=dtype or tf.float32)


def ones(shape: Any, *, dtype: Any = None, device: Any = None) -> Any:
    with _device_scope(device):
        return tf.ones(shape, dtype=dtype or tf.float32)


def zeros_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Any:
    return tf.zeros_like(x, dtype=dtype)


def ones_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Any:
    return tf.ones_like(x, dtype=dtype)


def _is_int(v: Any) -> Any:
    return isinstance(v, (int, np.integer)) or (tf.is_tensor(v) and v.dtype.is_integer)


def arange(start: Any, /, stop: Any = None, step: Any = 1, *, dtype: Any = None, device: Any = None) -> Any:
    """Like NumPy: integer arguments (scalar integer tensors included) give
    ``int64`` positions."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = tf.int64 if _builtins.all(_is_int(v) for v in (start, stop, step)) else tf.float32
    with _device_scope(device):
        return tf.range(start, stop, step, dtype=dtype)


# ----------------------------------------------------------------- elementwise
def exp(x: Any, /) -> Any:
    return tf.exp(x)


def log(x: Any, /) -> Any:
    return tf.math.log(x)


def abs(x: Any, /) -> Any:  # noqa: A001 - the array API name
    return tf.abs(x)


def maximum(x1: Any, x2: Any, /) -> Any:
    x1, x2 = _like(x1, x2), _like(x2, x1)
    return tf.maximum(x1, x2)


def minimum(x1: Any, x2: Any, /) -> Any:
    x1, x2 = _like(x1, x2), _like(x2, x1)
    return tf.minimum(x1, x2)


def where(condition: Any, x1: Any, x2: Any, /) -> Any:
    x1, x2 = _like(x1, x2), _like(x2, x1)
    return tf.where(condition, x1, x2)


def clip(x: Any, /, min: Any = None, max: Any = None) -> Any:  # noqa: A002
    if min is not None:
        x = tf.maximum(x, _like(min, x))
    if max is not None:
        x = tf.minimum(x, _like(max, x))
    return x


def astype(x: Any, dtype: Any, /, *, copy: Any = True, device: Any = None) -> Any:
    x = tf.convert_to_tensor(x)
    return x if x.dtype == dtype else tf.cast(x, dtype)


def broadcast_to(x: Any, /, shape: Sequence[int]) -> Any:
    return tf.broadcast_to(x, shape)


# ----------------------------------------------------------------- reductions
def sum(x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: Any = False) -> Any:  # noqa: A001
    if dtype is not None:
        x = tf.cast(x, dtype)
    return tf.reduce_sum(x, axis=_axis(axis), keepdims=keepdims)


def mean(x: Any, /, *, axis: Any = None, keepdims: Any = False) -> Any:
    return tf.reduce_mean(x, axis=_axis(axis), keepdims=keepdims)


def max(x: Any, /, *, axis: Any = None, keepdims: Any = False) -> Any:  # noqa: A001
    return tf.reduce_max(x, axis=_axis(axis), keepdims=keepdims)


def min(x: Any, /, *, axis: Any = None, keepdims: Any = False) -> Any:  # noqa: A001
    return tf.reduce_min(x, axis=_axis(axis), keepdims=keepdims)


def any(x: Any, /, *, axis: Any = None, keepdims: Any = False) -> Any:  # noqa: A001
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.bool:
        x = tf.not_equal(x, tf.zeros((), dtype=x.dtype))
    return tf.reduce_any(x, axis=_axis(axis), keepdims=keepdims)


def all(x: Any, /, *, axis: Any = None, keepdims: Any = False) -> Any:  # noqa: A001
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.bool:
        x = tf.not_equal(x, tf.zeros((), dtype=x.dtype))
    return tf.reduce_all(x, axis=_axis(axis), keepdims=keepdims)


def argmax(x: Any, /, *, axis: Any = None, keepdims: Any = False) -> Any:
    """``int64`` index of the maximum; ties go to the **first** position on
    every device (``tf.argmax`` does not guarantee which one), as in NumPy,
    PyTorch and JAX. No gradient."""
    x = tf.convert_to_tensor(x)
    if axis is None:
        x = tf.reshape(x, [-1])
        axis = 0
    x = tf.stop_gradient(x)
    rank = len(x.shape)
    axis = axis % rank
    n = sizes(x)[axis]  # a scalar tensor while tracing an unknown size
    top = tf.reduce_max(x, axis=axis, keepdims=True)
    shape = [1] * rank
    shape[axis] = -1
    pos = tf.reshape(tf.range(n, dtype=tf.int64), shape)
    big = tf.cast(n, tf.int64)
    # NaN compares unequal to everything: a row of NaNs gives index n, clipped below
    idx = tf.reduce_min(tf.where(tf.equal(x, top), pos, big), axis=axis, keepdims=keepdims)
    return tf.minimum(idx, big - 1)


# ----------------------------------------------------------------- indexing and linear algebra
def take_along_axis(x: Any, indices: Any, /, *, axis: int = -1) -> Any:
    """``out[..., i, ...] = x[..., indices[..., i, ...], ...]`` along ``axis``,
    with ``tf.gather(..., batch_dims=rank - 1)`` after moving ``axis`` last.
    ``indices`` is broadcast to ``x``'s shape on the other axes. Gradients flow
    into ``x``."""
    x = tf.convert_to_tensor(x)
    indices = tf.convert_to_tensor(indices)
    rank = len(x.shape)
    axis = axis % rank
    if len(indices.shape) != rank:
        raise ValueError(f"take_along_axis: 'indices' must have rank {rank}; got shape {tuple(indices.shape)}")
    target = [d if i != axis else m for i, (d, m) in enumerate(zip(sizes(x), sizes(indices)))]
    indices = tf.broadcast_to(indices, target)
    if axis != rank - 1:
        perm = [d for d in range(rank) if d != axis] + [axis]
        inv = [0] * rank
        for i, d in enumerate(perm):
            inv[d] = i
        out = tf.gather(tf.transpose(x, perm), tf.transpose(indices, perm), batch_dims=rank - 1)
        return tf.transpose(out, inv)
    return tf.gather(x, indices, batch_dims=rank - 1)


def matmul(x1: Any, x2: Any, /) -> Any:
    return tf.linalg.matmul(x1, x2)


def reshape(x: Any, /, shape: Sequence[int], *, copy: Any = None) -> Any:
    return tf.reshape(x, shape)


def concat(arrays: Sequence[Any], /, *, axis: int = 0) -> Any:
    return tf.concat(list(arrays), axis=axis)


def matrix_transpose(x: Any, /) -> Any:
    return tf.linalg.matrix_transpose(x)
