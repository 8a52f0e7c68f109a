"""Keras conveniences for :mod:`iaisreg.tf` (imported on first use).

* :class:`IAISLoss`: a ``keras.losses.Loss``. Keras losses are called as
  ``loss(y_true, y_pred)``; IAIS has no target, so ``y_pred`` is the model's
  attention-score output ``(B, H, N, N)`` and ``y_true`` says which positions
  are items: ``(B, N)`` with ``1`` = text item, ``2`` = image item, ``0`` =
  neither (padding, ``[CLS]``/``[SEP]``). Keras casts ``y_true`` to the loss
  dtype; the roles are read back by rounding. With ``n_text=k`` fixed at
  construction, ``y_true`` is ignored (any array, e.g. zeros). The per-sample
  losses go to Keras's reduction (default: mean over the batch, as
  ``iais(..., reduction="mean")``), multiplied by ``lambda_t`` of the loss's
  ``step``. Any batch size and sequence length, also unknown while Keras
  traces ``model.fit`` (``None``); under a ``mixed_float16`` policy the loss
  is computed and returned in float32.
* :class:`LambdaSchedule`: ``keras.optimizers.schedules.LearningRateSchedule``
  computing ``lambda_t`` (serialisable).
* :class:`IAISStepCallback`: copies ``model.optimizer.iterations`` into the
  loss's ``step`` before each training batch, so ``model.fit`` anneals.

All three pickle and deep-copy; the loss and the schedule are registered
Keras serialisables, so ``model.save``/``keras.models.load_model`` keep them
(the loss with its ``step``).
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from iaisreg._options import OPTIONS as _OPTIONS
from iaisreg._options import resolve_options as _resolve_options
from iaisreg._options import takes_options as _takes_options
from iaisreg.schedules import Schedule as _Schedule
from iaisreg.schedules import as_schedule as _as_schedule

from . import iais as _iais
from . import lambda_schedule as _lambda_schedule

__all__ = ["IAISLoss", "LambdaSchedule", "IAISStepCallback"]

#: the options of :func:`iaisreg.iais` a Keras loss takes (Keras has its own ``reduction``)
_LOSS_OPTIONS = {name: option for name, option in _OPTIONS.items() if name != "reduction"}


@keras.saving.register_keras_serializable(package="iaisreg")
class LambdaSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``lambda_t`` as a Keras schedule: ``schedule(step)`` -> float32 scalar.

    Args:
        name: ``"exp"`` (``exp((t/T - 1) gamma)``, the paper's best),
            ``"linear"``, ``"log"`` or ``"constant"``; see :mod:`iaisreg.schedules`.
        total_steps: ``T`` (not for ``"constant"``).
        gamma, value: as :func:`iaisreg.get_schedule`.

    >>> f = LambdaSchedule("exp", 100)
    >>> round(float(f(50)), 6), f
    (0.082085, LambdaSchedule(name='exp', total_steps=100, gamma=5.0, value=1.0))
    """

    def __init__(self, name: str = "exp", total_steps: int | None = None, *, gamma: float = 5.0,
                 value: float = 1.0) -> None:
        super().__init__()
        self._fn = _lambda_schedule(name, total_steps, gamma=gamma, value=value)  # validates
        self.name, self.total_steps, self.gamma, self.value = name, total_steps, gamma, value

    def __call__(self, step: Any) -> tf.Tensor:
        return self._fn(step)

    def get_config(self) -> dict:
        return {"name": self.name, "total_steps": self.total_steps, "gamma": self.gamma, "value": self.value}

    def __repr__(self) -> str:
        return f"LambdaSchedule({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and other._fn == self._fn

    def __hash__(self) -> int:
        return hash(self._fn)


@keras.saving.register_keras_serializable(package="iaisreg")
class IAISLoss(keras.losses.Loss):
    """IAIS as a ``keras.losses.Loss``: ``y_pred`` the attention scores
    ``(B, H, N, N)``, ``y_true`` the item roles ``(B, N)`` (1 text, 2 image,
    0 neither), or anything when ``n_text`` is fixed.

    Args:
        mode, anchor, variant, heads, inputs: as :func:`iaisreg.iais`.
        n_text: optional fixed ``int`` split point (then ``y_true`` is ignored).
        schedule: ``None``, a schedule name, a :class:`LambdaSchedule`, a
            :class:`iaisreg.schedules.Schedule` (held as a
            :class:`LambdaSchedule`) or any callable ``step -> weight``;
            applied to :attr:`step`. All but plain callables serialise.
        total_steps, gamma: for a named schedule.
        step: the initial value of :attr:`step` (a loaded loss restores it).
        reduction, name, dtype: as ``keras.losses.Loss`` (the default
            ``"sum_over_batch_size"`` is the mean over the batch).

    Attributes:
        step: a non-trainable ``tf.Variable`` (int64) holding ``t``; set it
            yourself or let :class:`IAISStepCallback` copy the optimizer's
            iteration count into it.

    >>> import tensorflow as tf, iaisreg.tf
    >>> s = tf.random.normal((2, 4, 6, 6))
    >>> roles = tf.constant([[0, 1, 1, 0, 2, 2], [0, 1, 0, 2, 2, 2]])
    >>> loss = IAISLoss(mode="distributed")
    >>> want = iaisreg.tf.iais(s, text_mask=roles == 1, image_mask=roles == 2, mode="distributed")
    >>> bool(abs(loss(roles, s) - want) < 1e-6)
    True
    """

    @_takes_options(_LOSS_OPTIONS)
    def __init__(
        self,
        *,
        n_text: int | None = None,
        schedule: str | Callable[[Any], Any] | None = None,
        total_steps: int | None = None,
        gamma: float = 5.0,
        reduction: str = "sum_over_batch_size",
        name: str = "iais",
        dtype: Any = None,
        step: int = 0,
        **options: str,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        options = _resolve_options("IAISLoss", options, _LOSS_OPTIONS)
        if n_text is not None and (isinstance(n_text, bool) or not isinstance(n_text, int) or n_text < 0):
            raise TypeError(f"IAISLoss: argument 'n_text' must be None or an int >= 0; got {n_text!r}")
        self.options = options
        self.n_text = n_text
        if isinstance(schedule, dict):  # from get_config
            schedule = keras.saving.deserialize_keras_object(schedule)
        schedule = _as_schedule(schedule, total_steps, gamma=gamma, func="IAISLoss")
        self.schedule = LambdaSchedule(**schedule.config) if isinstance(schedule, _Schedule) else schedule
        self.step = tf.Variable(step, dtype=tf.int64, trainable=False, name="iais_step")

    def weight(self) -> Any:
        """``lambda_t`` at the current :attr:`step` (1.0 without a schedule)."""
        if self.schedule is None:
            return 1.0
        return self.schedule(self.step)

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        if self.n_text is not None:
            per = _iais(y_pred, self.n_text, reduction="none", **self.options)
        else:
            roles = tf.cast(tf.round(tf.convert_to_tensor(y_true)), tf.int32)
            per = _iais(y_pred, text_mask=roles == 1, image_mask=roles == 2, reduction="none", **self.options)
        if self.schedule is None:
            return per
        return per * tf.cast(self.weight(), per.dtype)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(self.options)
        config["n_text"] = self.n_text
        config["step"] = int(self.step.numpy())
        if isinstance(self.schedule, LambdaSchedule):
            config["schedule"] = keras.saving.serialize_keras_object(self.schedule)
        elif self.schedule is not None:
            raise NotImplementedError("IAISLoss.get_config: a plain callable schedule cannot be serialised; "
                                      "use a schedule name, a LambdaSchedule or an iaisreg.schedules.Schedule")
        return config

    def __repr__(self) -> str:
        shown = {**self.options, "n_text": self.n_text, "schedule": self.schedule, "reduction": self.reduction}
        return f"IAISLoss({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class IAISStepCallback(keras.callbacks.Callback):
    """Before each training batch, set ``loss.step`` to the optimizer's
    iteration count, so an :class:`IAISLoss` used with ``model.fit`` follows
    its ``lambda_t`` schedule.

    >>> cb = IAISStepCallback(IAISLoss(schedule="exp", total_steps=10))
    """

    def __init__(self, loss: IAISLoss) -> None:
        super().__init__()
        if not isinstance(loss, IAISLoss):
            raise TypeError(f"IAISStepCallback: argument 'loss' must be an IAISLoss; got {type(loss).__name__}")
        self.loss = loss

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.loss.step.assign(tf.cast(self.model.optimizer.iterations, tf.int64))  # no host round trip

    def __repr__(self) -> str:
        return f"IAISStepCallback({self.loss!r})"
