"""The IAIS regularizer (paper Eq. 11 and 13) in both the authors' code's
form (``variant="official"``) and the printed equations' (``variant="paper"``)."""
from __future__ import annotations

from typing import Any, NamedTuple

from ._blocks import Items, Spans, column_bias, resolve_items
from ._divergence import mkl_terms, official_distributed_terms, safe_log
from ._mirror import distributed_mirror, singular_target
from ._namespace import compute_dtype, get_namespace
from ._ops import device_of, log_softmax, softmax
from ._options import resolve_options, takes_options
from ._validate import check_scores

__all__ = ["iais", "block_probs", "resolve_heads"]


def resolve_heads(heads: str, variant: str) -> str:
    if heads == "auto":
        return "mean_probs" if variant == "official" else "per_head"
    return heads


class _Group(NamedTuple):
    """One modality's column block for every row: ``p``/``log_p`` ``(B, H', N, W)``
    hold the row softmax over this group's columns ``lo <= j < hi`` (``W = hi - lo``).
    ``log_p`` is None when heads are averaged (logs are taken where needed)."""

    p: Any
    log_p: Any
    lo: int
    hi: int

    def rows(self, lo: int, hi: int, xp: Any) -> tuple[Any, Any]:
        """``(p, log_p)`` of the rows ``lo <= i < hi``."""
        p = self.p[..., lo:hi, :]
        return p, (safe_log(p, xp) if self.log_p is None else self.log_p[..., lo:hi, :])


def _group_blocks(s: Any, items: Items, spans: Spans, *, heads: str, inputs: str, xp: Any) -> tuple[_Group, _Group]:
    """The text-column and image-column block softmaxes of ``s`` ``(B, H, N, N)``
    (paper Eq. 6), each computed over its static column span only."""
    if inputs == "probs":
        s = safe_log(s, xp)
    if heads == "mean_scores":
        s = xp.mean(s, axis=1, keepdims=True)
    n = s.shape[-1]
    out = []
    for mask, span in ((items.text, spans.text), (items.image, spans.image)):
        lo, hi = span if span is not None else (0, n)
        cols = mask[:, None, None, lo:hi]
        x = s[..., lo:hi] + column_bias(cols, s.dtype, xp)
        if heads == "mean_probs":
            out.append(_Group(xp.mean(softmax(x, xp), axis=1, keepdims=True), None, lo, hi))
        else:
            raw = log_softmax(x, xp)
            zero = xp.zeros_like(raw)
            out.append(_Group(xp.where(cols, xp.exp(raw), zero), xp.where(cols, raw, zero), lo, hi))
    return out[0], out[1]


def _anchor_loss(a: _Group, o: _Group, anchor: Any, other: Any, *, mode: str, variant: str, xp: Any) -> Any:
    """Per-sample loss for one anchor. ``a``/``o``: the anchor's and the other
    modality's column blocks; ``anchor``/``other``: ``(B, N)`` item masks.
    Works on the ``(A, A)``, ``(A, O)``, ``(O, A)`` and ``(O, O)`` sub-blocks of
    the two spans. Returns ``(B,)``."""
    am, om = anchor[:, a.lo:a.hi], other[:, o.lo:o.hi]
    a_row, a_col = am[:, None, :, None], am[:, None, None, :]
    o_row, o_col = om[:, None, :, None], om[:, None, None, :]
    pair = a_row & a_col
    p_aa, log_p_aa = a.rows(a.lo, a.hi, xp)
    p_ao = o.p[..., a.lo:a.hi, :]
    if mode == "singular":
        # official: mirror the head-averaged probabilities, then softmax them;
        # paper: mirror the scores (log-probabilities differ from the scores by a
        # per-row constant, which the row softmax removes).
        if variant == "official":
            source = o.p[..., o.lo:o.hi, :]
        else:
            source = o.rows(o.lo, o.hi, xp)[1]
        log_q, q = singular_target(source, p_ao, a_col, o_col, xp)
        per = mkl_terms(p_aa, log_p_aa, q, log_q, pair, xp)
    else:
        q = distributed_mirror(p_ao, a.p[..., o.lo:o.hi, :], a_row, a_col, o_row, o_col, xp)
        if variant == "official":
            per = official_distributed_terms(p_aa, log_p_aa, q, pair, xp)
        else:
            per = mkl_terms(p_aa, log_p_aa, q, safe_log(q, xp), pair, xp)
    dt = p_aa.dtype
    n_a = xp.sum(xp.astype(anchor, dt), axis=-1)
    n_o = xp.sum(xp.astype(other, dt), axis=-1)
    per = xp.mean(per, axis=1)  # over heads (a single slot when heads are averaged)
    if variant == "official":  # KLDivLoss(reduction="batchmean") divides by the row count
        one = xp.asarray(1.0, dtype=dt, device=device_of(p_aa, xp))
        per = per / xp.maximum(n_a, one)
    valid = (n_a > 0) & (n_o > 0)
    return xp.where(valid, per, xp.zeros_like(per))


@takes_options()
def iais(
    attn: Any,
    n_text: Any = None,
    *,
    text_mask: Any = None,
    image_mask: Any = None,
    attention_mask: Any = None,
    check_overlap: bool | None = None,
    text_span: tuple[int, int] | None = None,
    image_span: tuple[int, int] | None = None,
    xp: Any = None,
    **options: str,
) -> Any:
    """IAIS relation-alignment loss (paper Eq. 11 singular / Eq. 13 distributed).

    Args:
        attn: ``(B, H, N, N)`` or ``(B, N, N)`` attention scores of one layer,
            ``Q K^T / sqrt(d)`` before any additive mask and softmax; or
            attention probabilities with ``inputs="probs"``. float16/bfloat16
            are computed in float32.
        n_text: int split point (positions ``< n_text`` are text items, the
            rest image items) or a ``(B,)`` integer array of per-sample text
            lengths. Alternatively give ``text_mask``/``image_mask``.
        text_mask, image_mask: ``(B, N)`` or ``(N,)`` boolean (or 0/1 integer)
            membership of the linguistic / visual items; any layout (padding
            in the middle, excluded ``[CLS]``/``[SEP]``). Must not overlap
            (checked when the values are on the host).
        attention_mask: ``(B, N)`` valid positions; padding belongs to no block.
        text_span, image_span: optional static ``(lo, hi)`` column ranges that
            hold every text / image item of every sample (e.g. the authors'
            layout: ``(1, max_tl - 1)`` and ``(max_tl, N)``). A speed hint:
            the block softmax then reads only those columns. Checked when the
            masks are on the host; under ``jit``/``compile`` it is a promise.
            Set automatically for an int ``n_text``.
        mode, anchor, variant, heads, reduction, inputs: the options of
            :data:`iaisreg.OPTIONS` (defaults there):

            * ``mode``: ``"singular"`` (argmax mirror, Eq. 10-11) or
              ``"distributed"`` (``P_ao @ P_oa``, Eq. 12-13);
            * ``anchor``: ``"V"`` (visual self-attention vs the mirror built
              from text), ``"L"`` (the reverse) or ``"both"`` (their sum);
            * ``variant``: ``"official"`` (the authors' code, default) or
              ``"paper"`` (the printed equations); see ``docs/semantics.md``;
            * ``heads``: ``"auto"`` (official: ``"mean_probs"``; paper:
              ``"per_head"``), ``"mean_probs"`` (average the block
              probabilities over heads), ``"per_head"`` (loss per head, then
              mean), ``"mean_scores"`` (average the scores over heads first);
            * ``reduction``: ``"mean"`` over samples, ``"sum"``, or
              ``"none"`` -> ``(B,)``;
            * ``inputs``: ``"scores"`` or ``"probs"``.

    Returns:
        The loss: a scalar, or ``(B,)`` for ``reduction="none"``, in the
        compute dtype (float32 for 16-bit inputs). A sample with no text item
        or no image item contributes loss 0 with zero gradient (and still
        counts in the mean).

    Reproducing the authors' UNITER setup (scores of the last layer's
    positive pairs, text items without ``[CLS]``/``[SEP]``)::

        t, v = masks_from_lengths(N, txt_lens - 2, num_bbs, text_start=1, image_start=max_tl)
        iais(scores, text_mask=t, image_mask=v, mode="singular", anchor="V")

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.normal(size=(2, 4, 7, 7))
    >>> loss = iais(scores, 3, mode="distributed", anchor="both")
    >>> loss.shape, bool(loss >= 0)
    ((), True)
    """
    func = "iais"
    opts = resolve_options(func, options)
    b, _, n = check_scores(attn, func=func)
    xp = get_namespace(attn, xp=xp)
    dt = compute_dtype(attn.dtype, xp, name="attn")
    dev = device_of(attn, xp)
    items, spans = resolve_items(
        b, n, n_text=n_text, text_mask=text_mask, image_mask=image_mask, attention_mask=attention_mask,
        xp=xp, dev=dev, func=func, check_overlap=check_overlap, text_span=text_span, image_span=image_span,
    )
    s = xp.astype(attn, dt)
    if s.ndim == 3:
        s = s[:, None, :, :]
    return _iais_from_scores(s, items, **opts, xp=xp, spans=spans)


def block_probs(s: Any, items: Items, *, heads: str, inputs: str, xp: Any,
                spans: Spans = Spans()) -> tuple[Any, Any]:
    """Block softmaxes of ``s`` ``(B, H, N, N)`` as full-width arrays: ``(p, log_p)``
    of shape ``(B, H', N, N)`` (``H' = 1`` when heads are averaged); text columns
    are normalised over the text items, image columns over the image items,
    other columns are 0."""
    text, image = _group_blocks(s, items, spans, heads=heads, inputs=inputs, xp=xp)
    n = s.shape[-1]
    t_col = items.text[:, None, None, :]
    v_col = items.image[:, None, None, :]

    def widen(x: Any, g: _Group) -> Any:
        head = tuple(x.shape[:-1])
        pieces = []
        if g.lo > 0:
            pieces.append(xp.zeros(head + (g.lo,), dtype=x.dtype, device=device_of(x, xp)))
        pieces.append(x)
        if g.hi < n:
            pieces.append(xp.zeros(head + (n - g.hi,), dtype=x.dtype, device=device_of(x, xp)))
        return xp.concat(pieces, axis=-1) if len(pieces) > 1 else x

    p_t = widen(text.p, text)
    zero = xp.zeros_like(p_t)
    p = xp.where(t_col, p_t, xp.where(v_col, widen(image.p, image), zero))
    if text.log_p is None:
        return p, safe_log(p, xp)
    log_p = xp.where(t_col, widen(text.log_p, text), xp.where(v_col, widen(image.log_p, image), zero))
    return p, log_p


def _iais_from_scores(s: Any, items: Items, *, mode: str, anchor: str, variant: str, heads: str,
                      reduction: str, inputs: str, xp: Any, spans: Spans = Spans()) -> Any:
    heads = resolve_heads(heads, variant)
    text, image = _group_blocks(s, items, spans, heads=heads, inputs=inputs, xp=xp)
    per = None
    if anchor in ("V", "both"):
        per = _anchor_loss(image, text, items.image, items.text, mode=mode, variant=variant, xp=xp)
    if anchor in ("L", "both"):
        loss_l = _anchor_loss(text, image, items.text, items.image, mode=mode, variant=variant, xp=xp)
        per = loss_l if per is None else per + loss_l
    if reduction == "none":
        return per
    if reduction == "sum":
        return xp.sum(per)
    return xp.mean(per)
