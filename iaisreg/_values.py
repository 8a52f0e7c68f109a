"""Checks on array values, made only where they are cheap and the values are
on the host: NumPy arrays and eager CPU tensors (see
:func:`iaisreg._namespace.is_host_concrete`). Under ``jax.jit``,
``tf.function``, ``torch.compile`` and on accelerators they are skipped,
so they never synchronise with a device or break a trace; there the
documented contract is a promise."""
from __future__ import annotations

from typing import Any

from ._namespace import is_host_concrete

__all__ = ["check_probabilities", "check_distributions", "check_spans"]


def _host(*arrays: Any) -> bool:
    return all(a is None or not hasattr(a, "shape") or is_host_concrete(a) for a in arrays)


def _outside_unit(x: Any, where: Any, xp: Any) -> Any:
    """Boolean: entries of ``x`` outside ``[0, 1]`` (NaN included) where
    ``where`` holds; 2 ulps above 1 are rounding (a normalised row can sum
    to 1 + eps)."""
    return where & ~((x >= 0) & (x <= 1 + 2 * float(xp.finfo(x.dtype).eps)))


def _range_text(x: Any, where: Any, xp: Any) -> str:
    big = xp.asarray(float("inf"), dtype=x.dtype)
    numbers = where & (x == x)
    lo = xp.min(xp.where(numbers, x, big))
    hi = xp.max(xp.where(numbers, x, -big))
    nan = bool(xp.any(where & (x != x)))
    return f"values from {float(lo):.4g} to {float(hi):.4g}" + (" and NaN" if nan else "")


def check_probabilities(attn: Any, text: Any, image: Any, xp: Any, *, func: str) -> None:
    """``inputs="probs"``: ``attn`` ``(B, H, N, N)`` (or ``(B, N, N)``) must hold
    values in ``[0, 1]`` at the (item, item) entries of the ``(B, N)`` item
    masks ``text``/``image`` (other positions are ignored by the loss)."""
    if not _host(attn, text, image):
        return
    items = text | image
    where = items[:, :, None] & items[:, None, :]
    where = where[:, None] if len(attn.shape) == 4 else where
    bad = _outside_unit(attn, where, xp)
    if bool(xp.any(bad)):
        raise ValueError(f"{func}: argument 'attn' must hold probabilities in [0, 1] with inputs='probs'; "
                         f"got {_range_text(attn, where, xp)} at item positions")


def check_distributions(x: Any, mask: Any, xp: Any, *, name: str, func: str) -> None:
    """``x`` ``(..., n, m)`` must have rows that are probability distributions:
    values in ``[0, 1]`` summing to 1 (within ``1e-3 + m * eps``). With a
    ``mask`` only its entries count, and their row sums must not exceed 1."""
    if not _host(x, mask):
        return
    where = xp.ones_like(x, dtype=xp.bool) if mask is None else xp.broadcast_to(mask, tuple(x.shape))
    if bool(xp.any(_outside_unit(x, where, xp))):
        raise ValueError(f"{func}: argument {name!r} must hold probability distributions in its rows (values in "
                         f"[0, 1]); got {_range_text(x, where, xp)}")
    rows = xp.sum(xp.where(where, x, xp.zeros_like(x)), axis=-1)
    tol = 1e-3 + x.shape[-1] * float(xp.finfo(x.dtype).eps)
    off = (rows > 1 + tol) if mask is not None else (xp.abs(rows - 1) > tol)
    if bool(xp.any(off)):
        worst = float(xp.max(xp.where(off, xp.abs(rows - 1), xp.zeros_like(rows))))
        raise ValueError(f"{func}: argument {name!r} must hold probability distributions in its rows (rows summing "
                         f"to 1{'' if mask is None else ' or less over the mask'}); got a row sum off by {worst:.4g}")


def check_spans(n: int, spans: list, xp: Any, *, func: str) -> None:
    """:func:`~iaisreg._blocks.masks_from_lengths`: for each ``(start name,
    start, length name, length)`` in ``spans`` (ints or ``(B,)`` integer
    arrays), the length and the start are ``>= 0`` and a non-empty span ends
    by ``n`` (``start + length <= n``)."""
    if not _host(*(v for span in spans for v in span[1::2])):
        return

    def any_(c: Any) -> bool:
        return bool(xp.any(c)) if hasattr(c, "shape") else bool(c)

    def listed(v: Any) -> Any:
        return [int(i) for i in xp.reshape(v, (-1,))] if hasattr(v, "shape") else int(v)

    for s_name, start, l_name, length in spans:
        for name, v in ((l_name, length), (s_name, start)):
            if any_(v < 0):
                raise ValueError(f"{func}: argument {name!r} must be >= 0; got {listed(v)}")
        if any_((length > 0) & (start + length > n)):  # an empty span may start anywhere
            raise ValueError(f"{func}: argument {l_name!r} must end inside the {n} positions ({s_name} + {l_name} "
                             f"<= {n}); got {l_name} {listed(length)} with {s_name} {listed(start)}")
