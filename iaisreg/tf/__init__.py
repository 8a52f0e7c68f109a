"""TensorFlow adapter: :func:`iais`, :func:`isda`, :func:`m_kl`,
:func:`masks_from_lengths` on ``tf.Tensor``, differentiable under
``tf.GradientTape`` and traceable by ``tf.function``, plus Keras
conveniences: :class:`IAISLoss` (a ``keras.losses.Loss``),
:class:`LambdaSchedule` (a ``keras.optimizers.schedules`` schedule for
``lambda_t``) and :class:`IAISStepCallback` (keeps the loss's step in sync
with the optimizer). The Keras classes (``iaisreg/tf/_keras.py``) are
imported on first use.

array-api-compat does not support TensorFlow; the core runs on the small
private namespace :mod:`iaisreg.tf._namespace`. All math lives in the core;
this module only converts and wraps.

Inside ``tf.function`` the shapes must be static (no ``None`` dimensions in
an ``input_signature``); Python option strings and an ``int`` ``n_text``
become part of the trace, tensors (scores, masks, ``(B,)`` lengths) are
traced. Value checks (``n_text`` in range, overlapping masks) run in eager
mode only.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

import iaisreg as _core

from . import _namespace

__all__ = [
    "iais", "isda", "m_kl", "masks_from_lengths", "IAISLoss", "LambdaSchedule", "IAISStepCallback",
    "lambda_schedule", "xp",
]

#: the array namespace the core runs on for ``tf.Tensor`` (:mod:`iaisreg.tf._namespace`)
xp = _namespace

_KERAS = ("IAISLoss", "LambdaSchedule", "IAISStepCallback")


def __getattr__(name: str) -> Any:  # the Keras classes, imported on first use
    if name in _KERAS:
        from . import _keras

        return getattr(_keras, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_KERAS))


def _as_tensor(x: Any, name: str, func: str) -> Any:
    """``tf.Tensor`` as is; ``tf.Variable`` read (the tape still sees it);
    NumPy arrays converted."""
    if isinstance(x, tf.Tensor):
        return x
    if isinstance(x, (tf.Variable, np.ndarray, np.generic)):
        return tf.convert_to_tensor(x)
    raise TypeError(f"{func}: argument {name!r} must be a tf.Tensor (or a NumPy array); got {type(x).__name__}")


def _convert_arrays(kwargs: dict, names: tuple) -> dict:
    out = dict(kwargs)
    for k in names:
        v = out.get(k)
        if isinstance(v, (tf.Variable, np.ndarray, np.generic)):
            out[k] = tf.convert_to_tensor(v)
    return out


_MASKS = ("text_mask", "image_mask", "attention_mask")


def iais(attn: tf.Tensor, n_text: Any = None, **kwargs: Any) -> tf.Tensor:
    """:func:`iaisreg.iais` for ``tf.Tensor`` (same arguments): ``attn``
    ``(B, H, N, N)`` or ``(B, N, N)`` -> scalar, or ``(B,)`` with
    ``reduction="none"``. NumPy masks and lengths are converted; integer
    lengths of any width (``int32``, ``int64``) are accepted.

    >>> import tensorflow as tf, iaisreg.tf
    >>> s = tf.random.normal((2, 4, 10, 10))
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(s)
    ...     loss = iaisreg.tf.iais(s, 4, mode="distributed")
    >>> tape.gradient(loss, s).shape
    TensorShape([2, 4, 10, 10])
    """
    attn = _as_tensor(attn, "attn", "iais")
    if isinstance(n_text, (tf.Variable, np.ndarray, np.generic)):
        n_text = tf.convert_to_tensor(n_text)
    return _core.iais(attn, n_text, xp=_namespace, **_convert_arrays(kwargs, _MASKS))


def isda(scores: tf.Tensor, text_groups: Any, image_groups: Any, n_text: Any = None, **kwargs: Any) -> Any:
    """:func:`iaisreg.isda` for ``tf.Tensor`` (same arguments)."""
    scores = _as_tensor(scores, "scores", "isda")
    if isinstance(n_text, (tf.Variable, np.ndarray, np.generic)):
        n_text = tf.convert_to_tensor(n_text)
    kwargs = _convert_arrays(kwargs, _MASKS)
    text_groups, image_groups = (tf.convert_to_tensor(g) if isinstance(g, np.ndarray) else g
                                 for g in (text_groups, image_groups))
    return _core.isda(scores, text_groups, image_groups, n_text, xp=_namespace, **kwargs)


def m_kl(a: tf.Tensor, b: tf.Tensor, **kwargs: Any) -> tf.Tensor:
    """:func:`iaisreg.m_kl` for ``tf.Tensor``: ``(..., n, m)`` -> ``(...,)``."""
    a = _as_tensor(a, "a", "m_kl")
    b = _as_tensor(b, "b", "m_kl")
    return _core.m_kl(a, b, xp=_namespace, **_convert_arrays(kwargs, ("mask",)))


def masks_from_lengths(n: int, text_lengths: Any, image_lengths: Any, **kwargs: Any) -> _core.Items:
    """:func:`iaisreg.masks_from_lengths` for ``tf.Tensor`` lengths: ``(B, N)`` masks.

    >>> t, v = masks_from_lengths(6, tf.constant([2, 1]), tf.constant([2, 3]), text_start=1, image_start=4)
    >>> tf.cast(t, tf.int32).numpy().tolist()
    [[0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    """
    conv = {k: (tf.convert_to_tensor(v) if isinstance(v, (np.ndarray, tf.Variable)) else v) for k, v in kwargs.items()}
    text_lengths, image_lengths = (tf.convert_to_tensor(v) if isinstance(v, (np.ndarray, tf.Variable)) else v
                                   for v in (text_lengths, image_lengths))
    return _core.masks_from_lengths(n, text_lengths, image_lengths, xp=_namespace, **conv)


def lambda_schedule(name: str = "exp", total_steps: int | None = None, *, gamma: float = 5.0, value: float = 1.0) -> Any:
    """A function ``step -> lambda_t`` returning a float32 ``tf.Tensor``, safe
    inside ``tf.function``; see :mod:`iaisreg.schedules`. The configuration is
    checked once, here. (:class:`LambdaSchedule` is the same as a
    serialisable Keras schedule.)

    >>> f = lambda_schedule("exp", 100)
    >>> round(float(f(50)), 6)
    0.082085
    """
    core = _core.get_schedule(name, total_steps, gamma=gamma, value=value)

    def schedule(step: Any) -> tf.Tensor:
        if isinstance(step, bool) or not (isinstance(step, (int, float, np.number)) or hasattr(step, "dtype")):
            raise TypeError(f"lambda_schedule: 'step' must be a number or a 0-d tensor; got {type(step).__name__}")
        step = tf.convert_to_tensor(step)
        if step.dtype != tf.float64:
            step = tf.cast(step, tf.float32)
        return core(step)

    return schedule
