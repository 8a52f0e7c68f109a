"""Divergences between row-stochastic matrices: the paper's matrix KL
(m-KL, Eq. 8) and the authors' ``KLDivLoss(reduction="batchmean")`` pair."""
from __future__ import annotations

from typing import Any

from ._namespace import as_array, compute_dtype, get_namespace
from ._ops import device_of
from ._validate import dtype_name, matches, shape_of
from ._values import check_distributions

__all__ = ["m_kl", "safe_log", "xlogx", "mkl_terms", "official_distributed_terms"]

#: epsilon the authors add inside ``log`` for the distributed mirror.
OFFICIAL_EPS = 1e-6


def safe_log(x: Any, xp: Any) -> Any:
    """``log(max(x, smallest_normal))``: finite for every finite ``x >= 0``."""
    tiny = xp.asarray(float(xp.finfo(x.dtype).smallest_normal), dtype=x.dtype, device=device_of(x, xp))
    return xp.log(xp.maximum(x, tiny))


def xlogx(x: Any, xp: Any) -> Any:
    """``x log x`` with ``0 log 0 = 0`` and a finite gradient everywhere."""
    one = xp.asarray(1.0, dtype=x.dtype, device=device_of(x, xp))
    pos = x > 0
    return xp.where(pos, x * xp.log(xp.where(pos, x, one)), xp.zeros_like(x))


def _masked_sum(x: Any, mask: Any, xp: Any, axes: tuple[int, int] = (-2, -1)) -> Any:
    x = xp.where(mask, x, xp.zeros_like(x))
    return xp.sum(x, axis=axes)


def mkl_terms(p: Any, log_p: Any, q: Any, log_q: Any, mask: Any, xp: Any) -> Any:
    """``sum_ij (p - q)(log p - log q)`` over the masked entries: the m-KL of
    Eq. 8 (``KL(p||q) + KL(q||p)`` summed over rows) when both logs are exact."""
    return _masked_sum((p - q) * (log_p - log_q), mask, xp)


def official_distributed_terms(p: Any, log_p: Any, q: Any, mask: Any, xp: Any) -> Any:
    """The authors' distributed divergence, summed over entries (not yet
    divided by the row count):
    ``KL(input=log(p + 1e-6), target=q) + KL(input=log(q + 1e-6), target=p)``
    with ``KL(input, target) = sum target * (log target - input)`` and the
    target logged exactly."""
    eps = xp.asarray(OFFICIAL_EPS, dtype=p.dtype, device=device_of(p, xp))
    t1 = xlogx(q, xp) - q * xp.log(p + eps)
    t2 = p * log_p - p * xp.log(q + eps)
    return _masked_sum(t1 + t2, mask, xp)


def m_kl(a: Any, b: Any, *, mask: Any = None, xp: Any = None) -> Any:
    """Matrix KL divergence (paper Eq. 8) between row-stochastic matrices.

    ``m-KL(A, B) = sum_i KL(A_i || B_i) + KL(B_i || A_i)``, a plain sum over rows.

    Args:
        a, b: ``(..., n, m)`` arrays whose rows are probability distributions.
        mask: optional boolean ``(..., n, m)`` (or broadcastable) selecting the
            entries that count; rows and columns outside it are ignored.
    Returns:
        ``(...,)`` the divergence per matrix. Symmetric, ``>= 0``, and ``0`` iff
        the rows are equal. Zeros are handled with ``0 log 0 = 0``; a zero
        facing a positive entry is clamped at the dtype's smallest normal
        number so the result stays finite.

    >>> import numpy as np
    >>> a = np.array([[0.5, 0.5], [0.9, 0.1]])
    >>> b = np.array([[0.5, 0.5], [0.1, 0.9]])
    >>> round(float(m_kl(a, b)), 6)  # = 2 * 0.8 * ln 9
    3.515559
    """
    func = "m_kl"
    if not hasattr(a, "shape") or not hasattr(b, "shape"):
        raise TypeError(f"{func}: arguments 'a' and 'b' must be arrays; got {type(a).__name__} and {type(b).__name__}")
    xp = get_namespace(a, b, xp=xp)
    dev = device_of(a, xp)
    a, b = as_array(a, xp=xp, dev=dev, name="a", func=func), as_array(b, xp=xp, dev=dev, name="b", func=func)
    if not matches(shape_of(a), shape_of(b)):
        raise ValueError(f"{func}: arguments 'a' and 'b' must have the same shape; got {shape_of(a)} and {shape_of(b)}")
    if len(shape_of(a)) < 2:
        raise ValueError(f"{func}: arguments 'a' and 'b' must be matrices (..., n, m); got shape {shape_of(a)}")
    dt = compute_dtype(a.dtype, xp, name="a", func=func)
    compute_dtype(b.dtype, xp, name="b", func=func)
    if mask is not None:
        mask = as_array(mask, xp=xp, dev=dev, name="mask", func=func)
        if mask.dtype != xp.bool:
            raise TypeError(f"{func}: argument 'mask' must be boolean; got dtype {dtype_name(mask.dtype)}")
    check_distributions(a, mask, xp, name="a", func=func)
    check_distributions(b, mask, xp, name="b", func=func)
    a = xp.astype(a, dt)
    b = xp.astype(b, dt)
    if mask is None:
        mask = xp.ones_like(a, dtype=xp.bool)
    return mkl_terms(a, safe_log(a, xp), b, safe_log(b, xp), mask, xp)
