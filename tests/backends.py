"""Array backends for the cross-backend tests.

``IAISREG_BACKENDS`` (comma list; default ``numpy,torch,jax,tf``) selects
the backends. Unknown names are an error at collection; a requested backend
that fails to import **fails** the tests that use it (no silent skip).

Each :class:`Backend` converts NumPy test data to its arrays (any dtype,
bfloat16 included), calls the adapter (``iaisreg.torch``, ``iaisreg.jax``,
``iaisreg.tf``; the core for NumPy), differentiates a scalar function
(autograd, ``jax.value_and_grad``, ``tf.GradientTape``) and compiles it
(``torch.compile``, ``jax.jit``, ``tf.function``), caching compiled
functions by a key so that a configuration compiles once per shape.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

import numpy as np
import pytest

ALL = ("numpy", "torch", "jax", "tf")
ENV = "IAISREG_BACKENDS"
FLOATS = ("float64", "float32", "float16", "bfloat16")


def requested() -> tuple[str, ...]:
    """The backends named in ``IAISREG_BACKENDS`` (all four by default)."""
    raw = os.environ.get(ENV, ",".join(ALL))
    names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise ValueError(f"{ENV}={raw!r}: unknown backend(s) {unknown}; choose from {', '.join(ALL)}")
    if not names:
        raise ValueError(f"{ENV}={raw!r} names no backend; choose from {', '.join(ALL)}")
    return names


def np_dtype(name: str) -> Any:
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` and back to float64: the exact values a
    backend receives, so the float64 reference sees the same input."""
    return np.asarray(np.asarray(x, dtype=np_dtype(dtype)), dtype=np.float64)


class Backend:
    name: str = ""
    dtypes: tuple = FLOATS

    def __init__(self) -> None:
        self._compiled: dict = {}

    # conversion
    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        """NumPy arrays -> backend arrays (keeping their dtype); dicts
        recursively; anything else unchanged."""
        if isinstance(value, dict):
            return {k: self.convert(v) for k, v in value.items()}
        if isinstance(value, np.ndarray):
            return self.asarray(value, str(value.dtype))
        return value

    # the library
    @property
    def module(self) -> Any:
        raise NotImplementedError

    def iais(self, attn: Any, n_text: Any = None, **kwargs: Any) -> Any:
        return self.module.iais(attn, n_text, **kwargs)

    # autodiff and compilation
    def value_and_grad(self, fn: Callable, x: Any, *args: Any) -> tuple[Any, Any]:
        """``fn(x, *args)`` (a scalar) and its gradient in ``x``."""
        raise NotImplementedError

    def compiled_value_and_grad(self, key: Any, fn: Callable) -> Callable:
        """A compiled ``(x, *args) -> (value, grad)`` of ``fn``, cached by ``key``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Backend({self.name})"


class NumpyBackend(Backend):
    name = "numpy"
    dtypes = ("float64", "float32", "float16")  # no bfloat16 in NumPy's array API

    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        return np.asarray(x, dtype=None if dtype is None else np.dtype(dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    @property
    def module(self) -> Any:
        import iaisreg

        return iaisreg

    def value_and_grad(self, fn: Callable, x: Any, *args: Any) -> tuple[Any, Any]:
        return fn(x, *args), None

    def compiled_value_and_grad(self, key: Any, fn: Callable) -> Callable:
        return lambda x, *args: self.value_and_grad(fn, x, *args)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self) -> None:
        super().__init__()
        import torch

        import iaisreg.torch

        self.torch = torch
        self._module = iaisreg.torch

    @property
    def module(self) -> Any:
        return self._module

    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        torch = self.torch
        if dtype == "bfloat16":
            return torch.from_numpy(np.asarray(x, dtype=np.float32)).to(torch.bfloat16)
        arr = np.array(x, dtype=None if dtype is None else np.dtype(dtype), order="C", copy=True)  # keeps 0-d
        return torch.from_numpy(arr)

    def to_numpy(self, x: Any) -> np.ndarray:
        x = x.detach()
        if x.is_floating_point():
            x = x.to(self.torch.float64)
        return x.cpu().numpy()

    def value_and_grad(self, fn: Callable, x: Any, *args: Any) -> tuple[Any, Any]:
        x = x.detach().clone().requires_grad_(True)
        value = fn(x, *args)
        (grad,) = self.torch.autograd.grad(value, x)
        return value, grad

    def compiled_value_and_grad(self, key: Any, fn: Callable) -> Callable:
        if key not in self._compiled:
            compiled = self.torch.compile(fn, dynamic=False, fullgraph=True)
            self._compiled[key] = lambda x, *args: self.value_and_grad(compiled, x, *args)
        return self._compiled[key]


class JaxBackend(Backend):
    name = "jax"

    def __init__(self) -> None:
        super().__init__()
        import jax
        import jax.numpy as jnp

        import iaisreg.jax

        self.jax, self.jnp = jax, jnp
        self._module = iaisreg.jax

    @property
    def module(self) -> Any:
        return self._module

    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        if not self.jax.config.jax_enable_x64 and dtype in ("float64", "int64"):
            raise RuntimeError("the jax backend needs jax_enable_x64 for 64-bit test data (see x64 below)")
        return self.jnp.asarray(np.asarray(x), dtype=None if dtype is None else getattr(self.jnp, dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        return x.astype(np.float64) if x.dtype.kind == "f" or x.dtype == np_dtype("bfloat16") else x

    def value_and_grad(self, fn: Callable, x: Any, *args: Any) -> tuple[Any, Any]:
        return self.jax.value_and_grad(fn)(x, *args)

    def compiled_value_and_grad(self, key: Any, fn: Callable) -> Callable:
        if key not in self._compiled:
            self._compiled[key] = self.jax.jit(self.jax.value_and_grad(fn))
        return self._compiled[key]


class TfBackend(Backend):
    name = "tf"

    def __init__(self) -> None:
        super().__init__()
        import tensorflow as tf

        import iaisreg.tf

        self.tf = tf
        self._module = iaisreg.tf

    @property
    def module(self) -> Any:
        return self._module

    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        tf = self.tf
        if dtype == "bfloat16":
            return tf.cast(tf.convert_to_tensor(np.asarray(x, dtype=np.float32)), tf.bfloat16)
        return tf.convert_to_tensor(np.asarray(x, dtype=None if dtype is None else np.dtype(dtype)))

    def to_numpy(self, x: Any) -> np.ndarray:
        tf = self.tf
        if x.dtype.is_floating:
            x = tf.cast(x, tf.float64)
        return x.numpy()

    def value_and_grad(self, fn: Callable, x: Any, *args: Any) -> tuple[Any, Any]:
        with self.tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x, *args)
        return value, tape.gradient(value, x)

    def compiled_value_and_grad(self, key: Any, fn: Callable) -> Callable:
        if key not in self._compiled:
            self._compiled[key] = self.tf.function(lambda x, *args: self.value_and_grad(fn, x, *args))
        return self._compiled[key]


_CLASSES = {"numpy": NumpyBackend, "torch": TorchBackend, "jax": JaxBackend, "tf": TfBackend}
_LOADED: dict = {}


def load(name: str) -> Backend:
    """The backend ``name``; a failed import fails the calling test."""
    if name not in _LOADED:
        try:
            _LOADED[name] = _CLASSES[name]()
        except Exception as exc:  # noqa: BLE001 - any import problem must fail, not skip
            pytest.fail(f"backend {name!r} was requested ({ENV}={os.environ.get(ENV, ','.join(ALL))!r}) "
                        f"but could not be loaded: {type(exc).__name__}: {exc}", pytrace=False)
    return _LOADED[name]


@contextlib.contextmanager
def jax_x64() -> Any:
    """Enable JAX float64 (``jax_enable_x64``) inside the block, restoring the
    previous setting afterwards; a no-op when JAX is not imported."""
    import sys

    jax = sys.modules.get("jax")
    if jax is None:
        try:
            import jax
        except ImportError:
            yield
            return
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)
