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

Inside ``tf.function`` Python option strings and an ``int`` ``n_text``
become part of the trace; tensors (scores, masks, ``(B,)`` lengths) are
traced, and their sizes may be unknown (``None`` in an ``input_signature``,
as Keras traces ``model.fit``). Value checks (``n_text`` in range,
overlapping masks, probabilities in ``[0, 1]``) run in eager mode only.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

import iaisreg as _core
from iaisreg import schedules as _schedules

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


def iais(attn: tf.Tensor, n_text: Any = None, **kwargs: Any) -> tf.Tensor:
    """:func:`iaisreg.iais` for ``tf.Tensor`` (same arguments): ``attn``
    ``(B, H, N, N)`` or ``(B, N, N)`` -> scalar, or ``(B,)`` with
    ``reduction="none"``. NumPy masks and lengths are converted (by the core,
    as on every backend); integer lengths of any width (``int32``,
    ``int64``) are accepted. Sizes unknown while tracing (``None`` in an
    ``input_signature``) are left to the trace.

    >>> import tensorflow as tf, iaisreg.tf
    >>> s = tf.random.normal((2, 4, 10, 10))
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(s)
    ...     loss = iaisreg.tf.iais(s, 4, mode="distributed")
    >>> tape.gradient(loss, s).shape
    TensorShape([2, 4, 10, 10])
    """
    return _core.iais(_as_tensor(attn, "attn", "iais"), n_text, xp=_namespace, **kwargs)


def isda(scores: tf.Tensor, text_groups: Any, image_groups: Any, n_text: Any = None, **kwargs: Any) -> Any:
    """:func:`iaisreg.isda` for ``tf.Tensor`` (same arguments)."""
    scores = _as_tensor(scores, "scores", "isda")
    return _core.isda(scores, text_groups, image_groups, n_text, xp=_namespace, **kwargs)


def m_kl(a: tf.Tensor, b: tf.Tensor, **kwargs: Any) -> tf.Tensor:
    """:func:`iaisreg.m_kl` for ``tf.Tensor``: ``(..., n, m)`` -> ``(...,)``."""
    a = _as_tensor(a, "a", "m_kl")
    b = _as_tensor(b, "b", "m_kl")
    return _core.m_kl(a, b, xp=_namespace, **kwargs)


def masks_from_lengths(n: int, text_lengths: Any, image_lengths: Any, **kwargs: Any) -> _core.Items:
    """:func:`iaisreg.masks_from_lengths` for ``tf.Tensor`` lengths: ``(B, N)`` masks.

    >>> t, v = masks_from_lengths(6, tf.constant([2, 1]), tf.constant([2, 2]), text_start=1, image_start=4)
    >>> tf.cast(t, tf.int32).numpy().tolist()
    [[0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    """
    return _core.masks_from_lengths(n, text_lengths, image_lengths, xp=_namespace, **kwargs)


@dataclasses.dataclass(frozen=True, repr=False)
class _TfSchedule(_schedules.FrameworkSchedule):
    framework: ClassVar[str] = "tf"

    def convert(self, step: Any) -> tf.Tensor:
        step = tf.convert_to_tensor(step)
        return step if step.dtype == tf.float64 else tf.cast(step, tf.float32)


def lambda_schedule(name: str | _core.Schedule = "exp", total_steps: int | None = None, *, gamma: float = 5.0,
                    value: float = 1.0) -> Any:
    """A function ``step -> lambda_t`` returning a float32 ``tf.Tensor``, safe
    inside ``tf.function``; see :mod:`iaisreg.schedules` (a
    :class:`~iaisreg.schedules.Schedule` is taken as ``name`` too). The
    configuration is checked once, here; the function pickles and compares by
    value. (:class:`LambdaSchedule` is the same as a serialisable Keras
    schedule.)

    >>> f = lambda_schedule("exp", 100)
    >>> round(float(f(50)), 6), f
    (0.082085, iaisreg.tf.lambda_schedule(ExpSchedule(total_steps=100, gamma=5.0)))
    """
    return _TfSchedule(_schedules.named_or_given(name, total_steps, gamma, value, func="lambda_schedule"))
