"""Annealing schedules ``lambda_t`` for the IAIS weight (Training Signal
Annealing, paper Eq. 16 and Sec. 5.3).

Each factory validates its configuration once and returns a function of the
training step. The function accepts a Python number (returns a float) or a
0-d array of any array-API library (returns an array of that library), so it
is safe inside ``jax.jit``, ``tf.function`` and ``torch.compile``. Progress
``p = t / T`` is clipped to ``[0, 1]``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

__all__ = ["exp_schedule", "linear_schedule", "log_schedule", "constant_schedule", "get_schedule", "SCHEDULES"]

Schedule = Callable[[Any], Any]
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


def _progress(step: Any, total: int, func: str) -> tuple[Any, Any]:
    """Return ``(p, xp)``; ``xp`` is None for Python numbers."""
    if isinstance(step, bool):
        raise TypeError(f"{func}: step must be a number or a 0-d array; got bool")
    if isinstance(step, numbers.Real):
        return min(max(float(step) / total, 0.0), 1.0), None
    from ._namespace import get_namespace

    if not hasattr(step, "dtype"):
        raise TypeError(f"{func}: step must be a number or a 0-d array; got {type(step).__name__}")
    xp = get_namespace(step)
    dt = step.dtype if xp.isdtype(step.dtype, "real floating") else xp.float32
    p = xp.astype(step, dt) / total
    return xp.clip(p, 0.0, 1.0), xp


def exp_schedule(total_steps: int, *, gamma: float = 5.0) -> Schedule:
    """``lambda_t = exp((t/T - 1) * gamma)`` (paper Eq. 16): from ``exp(-gamma)``
    to 1; the paper's best schedule (gamma = 5).

    >>> f = exp_schedule(100)
    >>> round(f(0), 6), f(100)
    (0.006738, 1.0)
    """
    func = "exp_schedule"
    total = _check_total(total_steps, func)
    g = _check_positive("gamma", gamma, func)

    def weight(step: Any) -> Any:
        p, xp = _progress(step, total, func)
        return math.exp((p - 1.0) * g) if xp is None else xp.exp((p - 1.0) * g)

    return weight


def linear_schedule(total_steps: int) -> Schedule:
    """``lambda_t = t / T`` (paper Eq. 16).

    >>> linear_schedule(10)(5)
    0.5
    """
    func = "linear_schedule"
    total = _check_total(total_steps, func)

    def weight(step: Any) -> Any:
        p, _ = _progress(step, total, func)
        return p

    return weight


def log_schedule(total_steps: int, *, gamma: float = 5.0) -> Schedule:
    """``lambda_t = 1 - exp(-t/T * gamma)`` (paper Eq. 16): from 0 to ``1 - exp(-gamma)``.

    >>> round(log_schedule(10)(10), 6)
    0.993262
    """
    func = "log_schedule"
    total = _check_total(total_steps, func)
    g = _check_positive("gamma", gamma, func)

    def weight(step: Any) -> Any:
        p, xp = _progress(step, total, func)
        return 1.0 - math.exp(-p * g) if xp is None else 1.0 - xp.exp(-p * g)

    return weight


def constant_schedule(value: float = 1.0) -> Schedule:
    """``lambda_t = value`` for every step.

    >>> constant_schedule(0.5)(123)
    0.5
    """
    func = "constant_schedule"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{func}: argument 'value' must be a finite number >= 0; got {value!r}")
    v = float(value)

    def weight(step: Any) -> Any:
        if isinstance(step, bool) or not (isinstance(step, numbers.Real) or hasattr(step, "dtype")):
            raise TypeError(f"{func}: step must be a number or a 0-d array; got {type(step).__name__}")
        if isinstance(step, numbers.Real):
            return v
        from ._namespace import get_namespace

        xp = get_namespace(step)
        dt = step.dtype if xp.isdtype(step.dtype, "real floating") else xp.float32
        return xp.zeros_like(xp.astype(step, dt)) + v

    return weight


def get_schedule(name: str, total_steps: int | None = None, *, gamma: float = 5.0, value: float = 1.0) -> Schedule:
    """Make a schedule by name: ``"exp"``, ``"linear"``, ``"log"`` or ``"constant"``.

    >>> round(get_schedule("exp", 10, gamma=5.0)(5), 6)
    0.082085
    """
    if name not in SCHEDULES:
        raise ValueError(f"get_schedule: argument 'name' must be one of {', '.join(map(repr, SCHEDULES))}; got {name!r}")
    if name == "constant":
        return constant_schedule(value)
    if total_steps is None:
        raise ValueError(f"get_schedule: schedule {name!r} needs 'total_steps'")
    if name == "exp":
        return exp_schedule(total_steps, gamma=gamma)
    if name == "log":
        return log_schedule(total_steps, gamma=gamma)
    return linear_schedule(total_steps)
