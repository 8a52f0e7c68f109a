"""The mirrored intra-modal attention built from the other modality:
singular (paper Eq. 10, Alg. 2) and distributed (paper Eq. 12).

Arrays are blocks of :func:`iaisreg._blocks.block_softmax`: rows and
columns outside the items are masked, never removed, so the samples of a
batch keep one shape."""
from __future__ import annotations

from typing import Any

from ._ops import device_of, masked_softmax, sizes, take_along_axis

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
    q, log_q = masked_softmax(m, anchor_cols, xp, log=True)
    return log_q, q


def distributed_mirror(p_ao: Any, p_oa: Any, xp: Any) -> Any:
    """``P_ao @ P_oa`` (Eq. 12): attention from each anchor item to the other
    modality, then back. ``p_ao``: ``(..., A, O)``, ``p_oa``: ``(..., O, A)``
    blocks of :func:`~iaisreg._blocks.block_softmax`, exactly 0 off their
    block in every item row and finite everywhere, so the product is exact
    on (anchor, anchor) entries and 0 at the other columns of an anchor row;
    other rows are finite and must be masked."""
    return xp.matmul(p_ao, p_oa)
