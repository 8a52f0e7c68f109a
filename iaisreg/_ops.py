"""Which framework an array or a namespace belongs to, and the delegation
layer: the generic array-API form of an operation by default, a framework's
native op where one exists.

One registry, :data:`FRAMEWORKS`, holds for PyTorch, JAX and TensorFlow the
same four things: how to recognise the framework's arrays and its namespace,
a private namespace when array-api-compat does not cover it (TensorFlow), and
a table of native ops (``softmax``, ``log_softmax``, ``take_along_axis``,
``device``, ``host_concrete``, ``dynamic_shape``; any may be missing). A
framework is consulted only when it is already in ``sys.modules`` (otherwise
no array of it can exist), so importing :mod:`iaisreg` never imports one.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, NamedTuple

import array_api_compat

__all__ = ["FRAMEWORKS", "framework_of_array", "framework_of_namespace", "private_namespace", "native", "device_of",
           "sizes", "softmax", "log_softmax", "masked_log_softmax", "take_along_axis", "column_bias"]


class Framework(NamedTuple):
    """What the core knows about one framework. ``module`` is its top-level
    module; the functions receive that (already imported) module."""

    module: str
    owns: Callable[[Any, Any], bool]  # (module, x): is x an array of this framework?
    is_namespace: Callable[[Any], bool]  # (xp): is xp this framework's namespace?
    ops: Callable[[Any], dict]  # (module) -> {name: native op}
    namespace: str | None = None  # a private namespace module, for frameworks array-api-compat does not cover


def _torch_host_concrete(x: Any) -> bool:
    torch = sys.modules["torch"]
    try:
        compiling = torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - old torch
        compiling = False
    return (not compiling) and x.device.type == "cpu" and not getattr(x, "is_meta", False) and type(x) is torch.Tensor


def _torch_ops(torch: Any) -> dict:
    return {
        "softmax": lambda x, axis: torch.softmax(x, dim=axis),
        "log_softmax": lambda x, axis: torch.log_softmax(x, dim=axis),
        # torch.gather directly, skipping array-api-compat's index normalisation
        "take_along_axis": lambda x, indices, axis: torch.gather(x, axis, indices),
        "host_concrete": _torch_host_concrete,
    }


def _jax_host_concrete(x: Any) -> bool:
    if isinstance(x, sys.modules["jax"].core.Tracer):
        return False
    try:
        return all(d.platform == "cpu" for d in x.devices())
    except Exception:  # pragma: no cover
        return False


def _jax_ops(jax: Any) -> dict:
    return {
        "softmax": lambda x, axis: jax.nn.softmax(x, axis=axis),
        "log_softmax": lambda x, axis: jax.nn.log_softmax(x, axis=axis),
        "host_concrete": _jax_host_concrete,
    }


def _tf_ops(tf: Any) -> dict:
    return {
        "softmax": lambda x, axis: tf.nn.softmax(x, axis=axis),
        "log_softmax": lambda x, axis: tf.nn.log_softmax(x, axis=axis),
        # "" for symbolic tensors inside tf.function, where TensorFlow's placer decides
        "device": lambda x: getattr(x, "device", "") or "",
        # the sizes a traced tensor's static shape leaves unknown (None)
        "dynamic_shape": lambda x: tf.shape(x, out_type=tf.int64),
        "host_concrete": lambda x: tf.executing_eagerly() and "CPU" in (x.device or "CPU").upper(),
    }


FRAMEWORKS: dict[str, Framework] = {
    "torch": Framework("torch", lambda torch, x: type(x).__module__.startswith("torch"),
                       array_api_compat.is_torch_namespace, _torch_ops),
    "jax": Framework("jax", lambda jax, x: type(x).__module__.startswith("jax"),
                     array_api_compat.is_jax_namespace, _jax_ops),
    "tf": Framework("tensorflow", lambda tf, x: isinstance(x, (tf.Tensor, tf.Variable)),
                    lambda xp: getattr(xp, "__name__", None) == "iaisreg.tf._namespace", _tf_ops,
                    namespace="iaisreg.tf._namespace"),
}

_OPS: dict[str, dict] = {}  # framework name -> its native ops, built on first use


def _ops_of(name: str) -> dict:
    if name not in _OPS:
        _OPS[name] = FRAMEWORKS[name].ops(sys.modules[FRAMEWORKS[name].module])
    return _OPS[name]


def framework_of_array(x: Any) -> str | None:
    """The registry name of the framework ``x`` is an array of, or None."""
    for name, fw in FRAMEWORKS.items():
        mod = sys.modules.get(fw.module)
        if mod is not None and fw.owns(mod, x):
            return name
    return None


def framework_of_namespace(xp: Any) -> str | None:
    """The registry name of the framework ``xp`` is the namespace of, or None
    (NumPy, array-API-only libraries)."""
    for name, fw in FRAMEWORKS.items():
        if fw.module in sys.modules and fw.is_namespace(xp):
            return name
    return None


def private_namespace(x: Any) -> Any:
    """The private namespace of ``x``'s framework (TensorFlow), or None."""
    name = framework_of_array(x)
    if name is None or FRAMEWORKS[name].namespace is None:
        return None
    return importlib.import_module(FRAMEWORKS[name].namespace)


def native(name: str, *, xp: Any = None, array: Any = None) -> Callable | None:
    """The native op ``name`` of the framework of namespace ``xp`` (or of
    ``array``), or None when there is none."""
    for fw_name, fw in FRAMEWORKS.items():
        if fw.module not in sys.modules:
            continue
        mine = fw.is_namespace(xp) if array is None else fw.owns(sys.modules[fw.module], array)
        if mine:
            return _ops_of(fw_name).get(name)
    return None


def device_of(x: Any, xp: Any) -> Any:
    """The device of ``x``, in the form ``xp``'s creation functions take
    (``None``, the default device, for a NumPy array given to a framework)."""
    fn = native("device", xp=xp)
    if fn is not None:
        return fn(x)
    if type(x).__module__.startswith("numpy") and framework_of_namespace(xp) is not None:
        return None
    return array_api_compat.device(x)


def sizes(x: Any) -> tuple:
    """``x``'s shape, each size usable in shape arguments (``reshape``,
    ``broadcast_to``, ``arange``): a Python int where the size is known, else
    what the framework gives while tracing (a symbolic size in
    ``torch.compile``, a scalar tensor for a ``None`` dimension in
    ``tf.function``)."""
    shape = tuple(x.shape)
    if all(d is not None for d in shape):
        return shape
    dynamic = native("dynamic_shape", array=x)(x)
    return tuple(dynamic[i] if d is None else d for i, d in enumerate(shape))


def softmax(x: Any, xp: Any, axis: int = -1) -> Any:
    """Numerically stable softmax along ``axis``."""
    fn = native("softmax", xp=xp)
    if fn is not None:
        return fn(x, axis)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_softmax(x: Any, xp: Any, axis: int = -1) -> Any:
    """Numerically stable log-softmax along ``axis``."""
    fn = native("log_softmax", xp=xp)
    if fn is not None:
        return fn(x, axis)
    z = x - xp.max(x, axis=axis, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def take_along_axis(x: Any, indices: Any, xp: Any, axis: int) -> Any:
    """``take_along_axis`` with non-negative ``indices``."""
    fn = native("take_along_axis", xp=xp)
    if fn is not None:
        return fn(x, indices, axis)
    return xp.take_along_axis(x, indices, axis=axis)


#: added to the scores of columns outside a block; exp() of it is exactly 0
#: in float32/float64 (16-bit inputs are computed in float32).
_MASK_VALUE = -1e30


def column_bias(cols: Any, dtype: Any, xp: Any) -> Any:
    """``0`` on the columns in ``cols``, a huge negative number elsewhere:
    ``softmax(s + column_bias(cols))`` is the row softmax over those columns
    only (exact: the other terms are exactly 0)."""
    zero = xp.zeros(sizes(cols), dtype=dtype, device=device_of(cols, xp))
    return xp.where(cols, zero, xp.asarray(_MASK_VALUE, dtype=dtype, device=device_of(cols, xp)))


def masked_log_softmax(s: Any, cols: Any, xp: Any) -> tuple[Any, Any]:
    """Row softmax of ``s`` ``(..., M)`` over the columns in ``cols`` (boolean,
    broadcastable to ``s``) only: ``(log_p, p)``, both 0 outside those
    columns; a row with no column in ``cols`` stays finite."""
    zero = xp.zeros_like(s)
    lp = log_softmax(s + column_bias(cols, s.dtype, xp), xp)
    return xp.where(cols, lp, zero), xp.where(cols, xp.exp(lp), zero)
