"""The mirrored intra-modal attention built from the other modality:
singular (paper Eq. 10, Alg. 2) and distributed (paper Eq. 12).

Arrays are the static sub-blocks of the column spans; rows/columns outside
the items are masked, never cut out by value, so every shape is static."""
from __future__ import annotations

from typing import Any

from ._ops import device_of, masked_log_softmax, sizes, take_along_axis

__all__ = ["mirror_index", "singular_mirror", "distributed_mirror", "singular_target"]


def mirror_index(p_ao: Any, other_cols: Any, xp: Any) -> Any:
    """``i* = argmax_j P_ao[i, j]`` over the other modality's columns (Alg. 2,
    line 3). ``p_ao``: ``(..., A, O)`` probabilities (or scores) of the cross
    block; returns ``(..., A)`` integer positions in ``[0, O)``. Ties go to the
    first position. The argmax carries no gradient; for rows outside the anchor
    items the value is unused."""
    low = xp.asarray(float(xp.finfo(p_ao.dtype).min), dtype=p_ao.dtype, device=device_of(p_ao, xp))
    return xp.argmax(xp.where(other_cols, p_ao, low), axis=-1)


def singular_mirror(source: Any, idx: Any, xp: Any) -> Any:
    """``M[i, j] = source[idx[i], idx[j]]`` (Eq. 10): the other modality's
    self-attention read at the positions each anchor item is mapped to.
    ``source``: ``(..., O, O)``; ``idx``: ``(..., A)`` positions in ``[0, O)``;
    returns ``(..., A, A)``. Gradients flow into ``source``; implemented as one
    gather on the flattened matrix."""
    shape = sizes(source)
    o = shape[-1]
    a = sizes(idx)[-1]
    lead = shape[:-2]
    flat = xp.reshape(source, lead + (o * o,))
    linear = idx[..., :, None] * o + idx[..., None, :]
    linear = xp.reshape(linear, sizes(linear)[:-2] + (a * a,))
    return xp.reshape(take_along_axis(flat, linear, xp, axis=len(shape) - 2), lead + (a, a))


def singular_target(source: Any, p_ao: Any, anchor_cols: Any, other_cols: Any, xp: Any) -> tuple[Any, Any]:
    """The singular target of Eq. 11, ``softmax_row(M)`` over the anchor
    columns, with ``M`` the mirror of :func:`singular_mirror` at the argmax
    positions of :func:`mirror_index` (``source``: the other modality's
    ``(..., O, O)`` block; ``p_ao``: the ``(..., A, O)`` cross block). Returns
    ``(log_q, q)``, both ``(..., A, A)``."""
    idx = mirror_index(p_ao, other_cols, xp)
    m = singular_mirror(source, idx, xp)
    return masked_log_softmax(m, anchor_cols, xp)


def distributed_mirror(p_ao: Any, p_oa: Any, anchor_rows: Any, anchor_cols: Any, other_rows: Any, other_cols: Any,
                       xp: Any) -> Any:
    """``P_ao @ P_oa`` (Eq. 12): attention from each anchor item to the other
    modality, then back. ``p_ao``: ``(..., A, O)``, ``p_oa``: ``(..., O, A)``
    block softmaxes; rows/columns outside the items are zeroed first, so the
    result ``(..., A, A)`` is non-zero only on (anchor, anchor) entries."""
    p_ao = xp.where(anchor_rows & other_cols, p_ao, xp.zeros_like(p_ao))
    p_oa = xp.where(other_rows & anchor_cols, p_oa, xp.zeros_like(p_oa))
    return xp.matmul(p_ao, p_oa)
