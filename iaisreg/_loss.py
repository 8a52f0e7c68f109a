"""The IAIS regularizer: the singular loss (paper Eq. 10-11) and the
distributed loss (Eq. 12-13), each in the authors' code's form
(``variant="official"``) and the printed equations' (``variant="paper"``);
:func:`iais` picks one by ``mode``."""
from __future__ import annotations

from typing import Any

from ._blocks import Blocks, item_ranges, resolve_items
from ._divergence import mkl_terms, official_distributed_terms, safe_log
from ._mirror import distributed_mirror, singular_target
from ._namespace import compute_dtype, get_namespace
from ._ops import device_of
from ._options import resolve_options, takes_options
from ._validate import check_scores
from ._values import check_probabilities

__all__ = ["iais", "singular_loss", "distributed_loss"]

_OTHER = {"V": "L", "L": "V"}


def _per_sample(per: Any, items: Any, anchor: str, *, variant: str, xp: Any) -> Any:
    """``(B, H')`` divergences -> ``(B,)``: mean over heads, divided by the
    anchor item count for the official variant (``KLDivLoss(reduction=
    "batchmean")``), 0 for a sample without text or without image items."""
    dt = per.dtype
    n_t = xp.sum(xp.astype(items.text, dt), axis=-1)
    n_v = xp.sum(xp.astype(items.image, dt), axis=-1)
    per = xp.mean(per, axis=1)  # over heads (a single slot when heads are averaged)
    if variant == "official":
        one = xp.asarray(1.0, dtype=dt, device=device_of(per, xp))
        per = per / xp.maximum(n_v if anchor == "V" else n_t, one)
    valid = (n_t > 0) & (n_v > 0)
    return xp.where(valid, per, xp.zeros_like(per))


def singular_loss(blocks: Blocks, anchor: str, *, variant: str, xp: Any) -> Any:
    """The singular IAIS loss (paper Eq. 11, with the mirror of Eq. 10 /
    Alg. 2): the divergence between the anchor's self-attention ``P_aa`` and
    ``softmax_row(M)``, ``M[i, j] = X_oo[i*, j*]`` with ``i* = argmax_j P_ao[i, j]``.

    ``blocks``: the :class:`~iaisreg._blocks.Blocks` of the scores (this loss
    reads ``aa``, ``ao`` and ``oo``); ``anchor``: ``"V"`` or ``"L"``.
    ``variant="official"``: ``X`` are the head-averaged probabilities, the
    divergence is the authors' two ``KLDivLoss(reduction="batchmean")``
    terms; ``"paper"``: ``X`` are the scores (read as block log-probabilities,
    which differ from them by a per-row constant that the row softmax
    removes), the divergence is m-KL (Eq. 8). Returns ``(B,)``.
    """
    other = _OTHER[anchor]
    aa, ao, oo = blocks(anchor, anchor), blocks(anchor, other), blocks(other, other)
    source = oo.p if variant == "official" else oo.log(xp)
    log_q, q = singular_target(source, ao.p, aa.cols, ao.cols, xp)
    per = mkl_terms(aa.p, aa.log(xp), q, log_q, aa.rows & aa.cols, xp)
    return _per_sample(per, blocks.items, anchor, variant=variant, xp=xp)


def distributed_loss(blocks: Blocks, anchor: str, *, variant: str, xp: Any) -> Any:
    """The distributed IAIS loss (paper Eq. 13, with the mirror of Eq. 12):
    the divergence between the anchor's self-attention ``P_aa`` and
    ``Q = P_ao @ P_oa``, attention to the other modality and back.

    Arguments as :func:`singular_loss` (this loss reads ``aa``, ``ao`` and
    ``oa``). ``variant="official"``: the authors' ``KLDivLoss(reduction=
    "batchmean")`` pair with ``log(x + 1e-6)`` on the input side;
    ``"paper"``: m-KL (Eq. 8) with exact logs. Returns ``(B,)``.
    """
    other = _OTHER[anchor]
    aa, ao, oa = blocks(anchor, anchor), blocks(anchor, other), blocks(other, anchor)
    q = distributed_mirror(ao.p, oa.p, xp)
    pair = aa.rows & aa.cols
    if variant == "official":
        per = official_distributed_terms(aa.p, aa.log(xp), q, pair, xp)
    else:
        per = mkl_terms(aa.p, aa.log(xp), q, safe_log(q, xp), pair, xp)
    return _per_sample(per, blocks.items, anchor, variant=variant, xp=xp)


_LOSSES = {"singular": singular_loss, "distributed": distributed_loss}


@takes_options()
def iais(
    attn: Any,
    n_text: Any = None,
    *,
    text_mask: Any = None,
    image_mask: Any = None,
    attention_mask: Any = None,
    check_overlap: bool | None = None,
    xp: Any = None,
    **options: str,
) -> Any:
    """IAIS relation-alignment loss (paper Eq. 11 singular / Eq. 13 distributed).

    Args:
        attn: ``(B, H, N, N)`` or ``(B, N, N)`` attention scores of one layer,
            ``Q K^T / sqrt(d)`` before any additive mask and softmax; or
            attention probabilities with ``inputs="probs"``. float16/bfloat16
            are computed in float32, backward included (with float16
            probabilities the gradient itself can exceed float16's range:
            ``docs/semantics.md``).
        n_text: int split point (positions ``< n_text`` are text items, the
            rest image items) or a ``(B,)`` integer array of per-sample text
            lengths. Alternatively give ``text_mask``/``image_mask``.
        text_mask, image_mask: ``(B, N)`` or ``(N,)`` boolean (or 0/1 integer)
            membership of the linguistic / visual items; any layout (padding
            in the middle, excluded ``[CLS]``/``[SEP]``). Must not overlap
            (checked when the values are on the host).
        attention_mask: ``(B, N)`` valid positions; padding belongs to no block.
            Nothing at a position outside both item masks can change the
            loss or its gradient (0 there), not even NaN or inf.
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
    items = resolve_items(b, n, n_text=n_text, text_mask=text_mask, image_mask=image_mask,
                          attention_mask=attention_mask, xp=xp, dev=dev, func=func, check_overlap=check_overlap)
    if opts["inputs"] == "probs":
        check_probabilities(attn, items.text, items.image, xp, func=func)
    s = attn if attn.dtype == dt else xp.astype(attn, dt)
    if s.ndim == 3:
        s = s[:, None, :, :]
    variant, heads = opts["variant"], opts["heads"]
    if heads == "auto":
        heads = "mean_probs" if variant == "official" else "per_head"
    blocks = Blocks(s, items, heads=heads, inputs=opts["inputs"], ranges=item_ranges(items, n, n_text=n_text), xp=xp)
    loss = _LOSSES[opts["mode"]]
    anchors = ("V", "L") if opts["anchor"] == "both" else (opts["anchor"],)
    per = loss(blocks, anchors[0], variant=variant, xp=xp)
    for anchor in anchors[1:]:
        per = per + loss(blocks, anchor, variant=variant, xp=xp)
    if opts["reduction"] == "none":
        return per
    return xp.sum(per) if opts["reduction"] == "sum" else xp.mean(per)
