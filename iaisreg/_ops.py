"""Which framework an array or a namespace belongs to, and the delegation
layer: the generic array-API form of an operation by default, a framework's
native op where one exists.

One registry, :data:`FRAMEWORKS`, holds for PyTorch, JAX and TensorFlow the
same four things: how to recognise the framework's arrays and its namespace,
a private namespace when array-api-compat does not cover it (TensorFlow), and
a table of native ops (``softmax``, ``log_softmax``, ``take_along_axis``,
``split``, ``stop_gradient``, ``device``, ``host_concrete``,
``shapes_from_values``, ``dynamic_shape``; any may be missing). A framework
is consulted only when it is already in ``sys.modules`` (otherwise no array
of it can exist), so importing :mod:`iaisreg` never imports one.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, NamedTuple

import array_api_compat

__all__ = ["FRAMEWORKS", "framework_of_array", "framework_of_namespace", "private_namespace", "native", "device_of",
           "sizes", "softmax", "log_softmax", "masked_softmax", "split", "stop_gradient", "take_along_axis"]


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
        # one backward node (a concatenation) for all pieces, not a full-size gradient per slice
        "split": lambda x, widths, axis: torch.split(x, widths, dim=axis),
        "stop_gradient": lambda x: x.detach(),
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
        "stop_gradient": jax.lax.stop_gradient,
        "host_concrete": _jax_host_concrete,
        # every new shape compiles each eager operation again: never cut blocks by values
        "shapes_from_values": lambda x: False,
    }


def _tf_ops(tf: Any) -> dict:
    return {
        "softmax": lambda x, axis: tf.nn.softmax(x, axis=axis),
        "log_softmax": lambda x, axis: tf.nn.log_softmax(x, axis=axis),
        # "" for symbolic tensors inside tf.function, where TensorFlow's placer decides
        "device": lambda x: getattr(x, "device", "") or "",
        "split": lambda x, widths, axis: tf.split(x, widths, axis=axis),
        "stop_gradient": tf.stop_gradient,
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


def split(x: Any, edges: list[int], xp: Any, axis: int) -> list[Any]:
    """The pieces ``x[edges[k]:edges[k + 1]]`` along ``axis`` (``edges``
    increasing from 0 to the axis length). Where the framework has a split
    (PyTorch, TensorFlow), the gradient of all pieces is assembled in one
    step, instead of one full-size zero array per sliced piece."""
    widths = [b - a for a, b in zip(edges, edges[1:])]
    fn = native("split", xp=xp)
    if fn is not None:
        return list(fn(x, widths, axis))
    index = [slice(None)] * x.ndim
    pieces = []
    for a, b in zip(edges, edges[1:]):
        index[axis] = slice(a, b)
        pieces.append(x[tuple(index)])
    return pieces


def stop_gradient(x: Any, xp: Any) -> Any:
    """``x`` cut from the autodiff graph (itself where there is none)."""
    fn = native("stop_gradient", xp=xp)
    return x if fn is None else fn(x)


def take_along_axis(x: Any, indices: Any, xp: Any, axis: int) -> Any:
    """``take_along_axis`` with non-negative ``indices``."""
    fn = native("take_along_axis", xp=xp)
    if fn is not None:
        return fn(x, indices, axis)
    return xp.take_along_axis(x, indices, axis=axis)


def masked_softmax(x: Any, cond: Any, xp: Any, *, log: bool = False, finite: bool = False) -> tuple[Any, Any]:
    """Row softmax of ``x`` ``(..., R, C)`` over the entries in ``cond``
    (boolean, broadcastable to ``x``) only: ``(p, log_p)``.

    Entries outside ``cond`` are replaced (``where``), never offset by a bias,
    so no value there (NaN, +-inf, 1e30) reaches the result or its gradient,
    which is exactly 0 there. ``p`` is exactly 0 outside ``cond`` in every row
    with at least one entry in ``cond``; a row with none gets finite values
    (uniform) that mean nothing and must be masked. A row whose entries in
    ``cond`` are all ``-inf`` is uniform over them (the limit of equal scores).
    ``log_p`` (with ``log=True``, else None) is the exact log-softmax on
    ``cond`` and 0 elsewhere, so ``0 * log_p`` stays 0 in a backward pass.

    ``finite=True`` promises that every value of ``x`` is finite: the
    entries off the block then get ``-inf`` added instead (bitwise the same
    result in every row with an entry in ``cond``, and a backward pass with
    nothing to select).
    """
    dev = device_of(x, xp)
    neg_inf = xp.asarray(-float("inf"), dtype=x.dtype, device=dev)
    zero = xp.asarray(0.0, dtype=x.dtype, device=dev)
    # off the block: -inf (exp gives exactly 0), or 0 in a row without entries
    off = xp.where(xp.any(cond, axis=-1, keepdims=True), neg_inf, zero)
    if finite:
        z = x + xp.where(cond, zero, off)
    else:  # -inf on the block becomes the lowest finite number: a row of them is uniform
        lowest = xp.asarray(float(xp.finfo(x.dtype).min), dtype=x.dtype, device=dev)
        z = xp.where(cond & (x != neg_inf), x, xp.where(cond, lowest, off))
    p = softmax(z, xp)
    if not log:
        return p, None
    return p, xp.where(cond, log_softmax(z, xp), zero)
