"""Annealing schedules ``lambda_t`` for the IAIS weight (Training Signal
Annealing, paper Eq. 16 and Sec. 5.3).

Each factory (:func:`exp_schedule`, ...) validates its configuration once and
returns a :class:`Schedule`: a small immutable callable ``step -> weight``
that pickles, copies and compares by value (``exp_schedule(100) ==
exp_schedule(100)``) and prints as what it is (``ExpSchedule(total_steps=100,
gamma=5.0)``). It accepts a Python number (returns a float) or a 0-d array of
any array-API library (returns an array of that library, with no host
synchronisation), so it is safe inside ``jax.jit``, ``tf.function`` and
``torch.compile``. Progress ``p = t / T`` is clipped to ``[0, 1]``; a NaN
step is an error (checked when the value is on the host).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, ClassVar

__all__ = [
    "Schedule", "ExpSchedule", "LinearSchedule", "LogSchedule", "ConstantSchedule",
    "exp_schedule", "linear_schedule", "log_schedule", "constant_schedule", "get_schedule", "as_schedule",
    "FrameworkSchedule", "SCHEDULES",
]

#: the schedule names :func:`get_schedule` accepts
SCHEDULES = ("exp", "linear", "log", "constant")


def _check_total(total_steps: Any, func: str) -> int:
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral):
        raise TypeError(f"{func}: argument 'total_steps' must be an int; got {type(total_steps).__name__} {total_steps!r}")
    if total_steps <= 0:
        raise ValueError(f"{func}: argument 'total_steps' must be > 0; got {total_steps}")
    return int(total_steps)


def _check_positive(name: str, value: Any, func: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}: argument {name!r} must be a real number; got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{func}: argument {name!r} must be finite and > 0; got {value}")
    return value


def _step(step: Any, func: str) -> tuple[Any, Any]:
    """``(step, xp)``: a Python float (``xp`` None) or a floating 0-d array of
    namespace ``xp``. NaN is refused where the value is on the host."""
    if isinstance(step, bool) or not (isinstance(step, numbers.Real) or hasattr(step, "dtype")):
        raise TypeError(f"{func}: argument 'step' must be a number or a 0-d array; got {type(step).__name__}")
    if isinstance(step, numbers.Real):
        step = float(step)
        if math.isnan(step):
            raise ValueError(f"{func}: argument 'step' must not be NaN; got nan")
        return step, None
    from ._namespace import get_namespace, is_host_concrete

    xp = get_namespace(step)
    if not xp.isdtype(step.dtype, "real floating"):
        return xp.astype(step, xp.float32), xp
    if is_host_concrete(step) and bool(xp.any(step != step)):
        raise ValueError(f"{func}: argument 'step' must not be NaN; got nan")
    return step, xp


def _clip01(p: Any, xp: Any) -> Any:
    return min(max(p, 0.0), 1.0) if xp is None else xp.clip(p, 0.0, 1.0)


def _exp(x: Any, xp: Any) -> Any:
    return math.exp(x) if xp is None else xp.exp(x)


class Schedule:
    """A schedule ``step -> lambda_t``. Subclasses are frozen dataclasses
    (value equality, hashing, pickling and ``repr`` come from their fields)
    and define :meth:`at`, the weight at progress ``p`` in ``[0, 1]``."""

    name: ClassVar[str] = ""
    factory: ClassVar[str] = ""

    def __call__(self, step: Any) -> Any:
        t, xp = _step(step, self.factory)
        total = getattr(self, "total_steps", None)
        if total is None:
            return self.at(t, xp)
        return self.at(_clip01(t / total, xp), xp)

    def at(self, p: Any, xp: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def config(self) -> dict:
        """``{"name": ..., **fields}``: ``get_schedule(**s.config) == s``."""
        return {"name": self.name, **dataclasses.asdict(self)}


def _set(obj: Any, **fields: Any) -> None:
    for name, value in fields.items():
        object.__setattr__(obj, name, value)


@dataclasses.dataclass(frozen=True)
class _Annealed(Schedule):
    """The fields of the exp and log schedules: ``T`` and the sharpness ``gamma``."""

    total_steps: int
    gamma: float = 5.0

    def __post_init__(self) -> None:
        _set(self, total_steps=_check_total(self.total_steps, self.factory),
             gamma=_check_positive("gamma", self.gamma, self.factory))


@dataclasses.dataclass(frozen=True)
class ExpSchedule(_Annealed):
    """``lambda_t = exp((t/T - 1) * gamma)`` (paper Eq. 16)."""

    name: ClassVar[str] = "exp"
    factory: ClassVar[str] = "exp_schedule"

    def at(self, p: Any, xp: Any) -> Any:
        return _exp((p - 1.0) * self.gamma, xp)


@dataclasses.dataclass(frozen=True)
class LogSchedule(_Annealed):
    """``lambda_t = 1 - exp(-t/T * gamma)`` (paper Eq. 16)."""

    name: ClassVar[str] = "log"
    factory: ClassVar[str] = "log_schedule"

    def at(self, p: Any, xp: Any) -> Any:
        return 1.0 - _exp(-p * self.gamma, xp)


@dataclasses.dataclass(frozen=True)
class LinearSchedule(Schedule):
    """``lambda_t = t / T`` (paper Eq. 16)."""

    total_steps: int
    name: ClassVar[str] = "linear"
    factory: ClassVar[str] = "linear_schedule"

    def __post_init__(self) -> None:
        _set(self, total_steps=_check_total(self.total_steps, self.factory))

    def at(self, p: Any, xp: Any) -> Any:
        return p


@dataclasses.dataclass(frozen=True)
class ConstantSchedule(Schedule):
    """``lambda_t = value`` for every step."""

    value: float = 1.0
    name: ClassVar[str] = "constant"
    factory: ClassVar[str] = "constant_schedule"

    def __post_init__(self) -> None:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)) or v < 0:
            raise ValueError(f"{self.factory}: argument 'value' must be a finite number >= 0; got {v!r}")
        _set(self, value=float(v))

    def at(self, t: Any, xp: Any) -> Any:
        return self.value if xp is None else xp.zeros_like(t) + self.value


def exp_schedule(total_steps: int, *, gamma: float = 5.0) -> ExpSchedule:
    """``lambda_t = exp((t/T - 1) * gamma)`` (paper Eq. 16): from ``exp(-gamma)``
    to 1; the paper's best schedule (gamma = 5).

    >>> f = exp_schedule(100)
    >>> round(f(0), 6), f(100), f
    (0.006738, 1.0, ExpSchedule(total_steps=100, gamma=5.0))
    """
    return ExpSchedule(total_steps, gamma)


def linear_schedule(total_steps: int) -> LinearSchedule:
    """``lambda_t = t / T`` (paper Eq. 16).

    >>> linear_schedule(10)(5)
    0.5
    """
    return LinearSchedule(total_steps)


def log_schedule(total_steps: int, *, gamma: float = 5.0) -> LogSchedule:
    """``lambda_t = 1 - exp(-t/T * gamma)`` (paper Eq. 16): from 0 to ``1 - exp(-gamma)``.

    >>> round(log_schedule(10)(10), 6)
    0.993262
    """
    return LogSchedule(total_steps, gamma)


def constant_schedule(value: float = 1.0) -> ConstantSchedule:
    """``lambda_t = value`` for every step.

    >>> constant_schedule(0.5)(123)
    0.5
    """
    return ConstantSchedule(value)


def _named(name: Any, total_steps: Any, gamma: Any, value: Any, *, func: str, arg: str) -> Schedule:
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ValueError(f"{func}: argument {arg!r} must be one of {', '.join(map(repr, SCHEDULES))}; got {name!r}")
    if name == "constant":
        return ConstantSchedule(value)
    if total_steps is None:
        raise ValueError(f"{func}: schedule {name!r} needs 'total_steps'")
    if name == "linear":
        return LinearSchedule(total_steps)
    return (ExpSchedule if name == "exp" else LogSchedule)(total_steps, gamma)


def get_schedule(name: str, total_steps: int | None = None, *, gamma: float = 5.0, value: float = 1.0) -> Schedule:
    """Make a schedule by name: ``"exp"``, ``"linear"``, ``"log"`` or ``"constant"``.

    >>> round(get_schedule("exp", 10, gamma=5.0)(5), 6)
    0.082085
    >>> get_schedule(**exp_schedule(10).config) == exp_schedule(10)
    True
    """
    return _named(name, total_steps, gamma, value, func="get_schedule", arg="name")


def as_schedule(schedule: Any, total_steps: int | None = None, *, gamma: float = 5.0,
                func: str = "IAISLoss") -> Callable[[Any], Any] | None:
    """What an ``IAISLoss(schedule=...)`` holds: ``None``; a :class:`Schedule`
    for a name (with ``total_steps``, ``gamma``); any other callable as given.
    Anything else is a ``TypeError`` naming ``schedule``.

    >>> as_schedule("linear", 10)
    LinearSchedule(total_steps=10)
    """
    if schedule is None or isinstance(schedule, str):
        return None if schedule is None else _named(schedule, total_steps, gamma, 1.0, func=func, arg="schedule")
    if callable(schedule):
        return schedule
    raise TypeError(f"{func}: argument 'schedule' must be None, a schedule name ({', '.join(map(repr, SCHEDULES))}) "
                    f"or a callable step -> weight; got {type(schedule).__name__} {schedule!r}")


@dataclasses.dataclass(frozen=True)
class FrameworkSchedule:
    """A :class:`Schedule` that always answers with one framework's arrays
    (``iaisreg.jax.lambda_schedule``, ``iaisreg.tf.lambda_schedule``):
    subclasses define :meth:`convert` (a step -> that framework's 0-d array)
    and ``framework``. Picklable, compared by value, shown as the call that
    makes it."""

    schedule: Schedule
    framework: ClassVar[str] = ""

    def convert(self, step: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, step: Any) -> Any:
        if isinstance(step, bool) or not (isinstance(step, numbers.Real) or hasattr(step, "dtype")):
            return self.schedule(step)  # the schedule's own TypeError
        return self.schedule(self.convert(step))

    def __repr__(self) -> str:
        return f"iaisreg.{self.framework}.lambda_schedule({self.schedule!r})"


def named_or_given(name: Any, total_steps: Any, gamma: Any, value: Any, *, func: str) -> Schedule:
    """A :class:`Schedule` given as itself or by name (``lambda_schedule``'s
    ``name`` argument)."""
    if isinstance(name, Schedule):
        return name
    return _named(name, total_steps, gamma, value, func=func, arg="name")
