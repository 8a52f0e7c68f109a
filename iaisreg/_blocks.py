"""Which positions are linguistic (L) and visual (V) items, and the block
softmax of the score matrix (paper Eq. 6).

Blocks are cut with boolean masks and static column spans, never by the
data, so no shape depends on the values: no host synchronisation, and the
same code runs under ``jax.jit``, ``tf.function`` and ``torch.compile``.
"""
from __future__ import annotations

import numbers
from typing import Any, NamedTuple

from ._divergence import safe_log
from ._namespace import as_array, get_namespace, is_host_concrete
from ._ops import column_bias, device_of, masked_log_softmax, sizes, softmax
from ._validate import check_int, dtype_name, known, matches, shape_of, show
from ._values import check_spans

__all__ = ["Items", "Spans", "resolve_items", "masks_from_lengths", "ColumnBlock", "block_softmax", "widen"]


class Items(NamedTuple):
    """Per-sample membership masks, both ``(B, N)`` booleans."""

    text: Any
    image: Any


class Spans(NamedTuple):
    """Optional static column spans ``(lo, hi)`` (Python ints) holding every
    text / image item of every sample: a hint that lets the block softmax
    skip the other columns."""

    text: tuple[int, int] | None = None
    image: tuple[int, int] | None = None


def _as_bool_mask(x: Any, *, name: str, b: int, n: int, xp: Any, dev: Any, func: str) -> Any:
    x = as_array(x, xp=xp, dev=dev, name=name, func=func)
    shape = shape_of(x)
    if not matches(shape, (b, n), (n,)):
        raise ValueError(f"{func}: argument {name!r} must have shape {show((b, n))} or {show((n,))}; got {shape}")
    dt = x.dtype
    if dt == xp.bool:
        m = x
    elif xp.isdtype(dt, "integral"):
        m = x != 0
    else:
        raise TypeError(
            f"{func}: argument {name!r} must be a boolean or 0/1 integer mask; got dtype {dtype_name(dt)} "
            "(additive float masks are not accepted: pass which positions are valid)"
        )
    if len(shape) == 1:
        m = xp.broadcast_to(m[None, :], (b, n))
    return m


def _as_lengths(x: Any, *, name: str, b: int, xp: Any, dev: Any, func: str) -> Any:
    x = as_array(x, xp=xp, dev=dev, name=name, func=func)
    shape = shape_of(x)
    if not matches(shape, (b,)):
        raise ValueError(f"{func}: argument {name!r} must be an int or an integer array of shape {show((b,))}; got shape {shape}")
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(f"{func}: argument {name!r} must have an integer dtype; got {dtype_name(x.dtype)}")
    return x


def _positions(n: int, xp: Any, dev: Any) -> Any:
    return xp.arange(n, device=dev)[None, :]


def masks_from_lengths(
    n: int,
    text_lengths: Any,
    image_lengths: Any,
    *,
    text_start: Any = 0,
    image_start: Any = None,
    xp: Any = None,
) -> Items:
    """Build ``(B, N)`` text/image item masks from per-sample lengths.

    Text items of sample ``b`` are positions ``[text_start, text_start + text_lengths[b])``,
    image items ``[image_start, image_start + image_lengths[b])``; ``image_start``
    defaults to ``text_start + text_lengths`` (regions right after the text).
    ``text_start`` / ``image_start`` are ints or ``(B,)`` integer arrays.

    The authors' UNITER setup (text padded to ``max_tl`` tokens including
    ``[CLS]``/``[SEP]``, regions from ``max_tl`` on)::

        masks_from_lengths(N, txt_lens - 2, num_bbs, text_start=1, image_start=max_tl)

    UNITER's compact layout (each sample's regions right after its own text)::

        masks_from_lengths(N, txt_lens - 2, num_bbs, text_start=1, image_start=txt_lens)

    >>> import numpy as np
    >>> t, v = masks_from_lengths(6, np.array([2, 1]), np.array([2, 2]), text_start=1, image_start=4)
    >>> t.astype(int).tolist(), v.astype(int).tolist()
    ([[0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]], [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]])
    """
    func = "masks_from_lengths"
    n = check_int("n", n, func=func, low=0)
    arrays = [a for a in (text_lengths, image_lengths, text_start, image_start) if hasattr(a, "shape")]
    if not arrays:
        raise TypeError(f"{func}: at least one of 'text_lengths'/'image_lengths' must be an array of shape (B,)")
    xp = get_namespace(*arrays, xp=xp)
    b = sizes(arrays[0])[0]
    dev = device_of(arrays[0], xp)
    pos = _positions(n, xp, dev)

    def col(v: Any, name: str) -> Any:
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            return v
        return xp.astype(_as_lengths(v, name=name, b=b, xp=xp, dev=dev, func=func), pos.dtype)[:, None]

    ts = col(text_start, "text_start")
    tl = col(text_lengths, "text_lengths")
    il = col(image_lengths, "image_lengths")
    is_ = ts + tl if image_start is None else col(image_start, "image_start")
    check_spans(n, [("text_start", ts, "text_lengths", tl),
                    ("image_start" if image_start is not None else "text_start + text_lengths", is_,
                     "image_lengths", il)], xp, func=func)
    text = (pos >= ts) & (pos < ts + tl)
    image = (pos >= is_) & (pos < is_ + il)
    text = xp.broadcast_to(text, (b, n))
    image = xp.broadcast_to(image, (b, n))
    return Items(text, image)


def resolve_items(
    b: int,
    n: int,
    *,
    n_text: Any = None,
    text_mask: Any = None,
    image_mask: Any = None,
    attention_mask: Any = None,
    xp: Any,
    dev: Any,
    func: str,
    check_overlap: bool | None = None,
    text_span: Any = None,
    image_span: Any = None,
) -> tuple[Items, Spans]:
    """Resolve the ways of saying which positions are text and image items.

    * ``n_text`` int: positions ``< n_text`` are text, the rest image;
    * ``n_text`` ``(B,)`` integer array: per-sample split point;
    * ``text_mask`` and/or ``image_mask`` ``(B, N)`` or ``(N,)``: explicit
      membership (one alone: the other modality is its complement);
    * ``attention_mask``: valid (non-padding) positions, intersected with both.

    ``text_span`` / ``image_span``: optional ``(lo, hi)`` ints promising that
    every text / image item lies in columns ``lo <= j < hi`` (checked when the
    masks' values are on the host). With an int ``n_text`` they are
    ``(0, n_text)`` and ``(n_text, N)``.
    """
    have_masks = text_mask is not None or image_mask is not None
    if n_text is not None and have_masks:
        raise ValueError(f"{func}: give either 'n_text' or 'text_mask'/'image_mask', not both")
    if n_text is None and not have_masks:
        raise ValueError(f"{func}: say which positions are text: give 'n_text' (int or (B,) lengths) or 'text_mask'/'image_mask'")
    if n_text is not None:
        pos = _positions(n, xp, dev)
        if isinstance(n_text, numbers.Integral) and not isinstance(n_text, bool):
            k = check_int("n_text", n_text, func=func, low=0, high=n)
            text = xp.broadcast_to(pos < k, (b, n))
        elif isinstance(n_text, (bool, float, str)) or not hasattr(n_text, "shape"):
            raise TypeError(f"{func}: argument 'n_text' must be an int or an integer array of shape ({b},); got {type(n_text).__name__} {n_text!r}")
        else:
            lens = _as_lengths(n_text, name="n_text", b=b, xp=xp, dev=dev, func=func)
            if is_host_concrete(lens):
                import numpy as np

                arr = np.asarray(lens)
                if arr.size and (arr.min() < 0 or arr.max() > n):
                    raise ValueError(f"{func}: argument 'n_text' must hold lengths in [0, {n}]; got {arr.tolist()}")
            text = pos < xp.astype(lens, pos.dtype)[:, None]  # TensorFlow does not promote int32/int64
        image = ~text
    else:
        text = image = None
        if text_mask is not None:
            text = _as_bool_mask(text_mask, name="text_mask", b=b, n=n, xp=xp, dev=dev, func=func)
        if image_mask is not None:
            image = _as_bool_mask(image_mask, name="image_mask", b=b, n=n, xp=xp, dev=dev, func=func)
        if text is None:
            text = ~image
        elif image is None:
            image = ~text
        elif check_overlap is not False and is_host_concrete(text) and is_host_concrete(image):
            import numpy as np

            both = np.asarray(text) & np.asarray(image)
            if both.any():
                where = np.argwhere(both)[:5].tolist()
                raise ValueError(
                    f"{func}: arguments 'text_mask' and 'image_mask' overlap: a position cannot be both a text "
                    f"and an image item; overlapping (sample, position) pairs include {where}"
                )
    if attention_mask is not None:
        valid = _as_bool_mask(attention_mask, name="attention_mask", b=b, n=n, xp=xp, dev=dev, func=func)
        text = text & valid
        image = image & valid
    if isinstance(n_text, numbers.Integral) and not isinstance(n_text, bool):
        text_span = (0, int(n_text)) if text_span is None else text_span
        image_span = (int(n_text), n) if image_span is None and known(n) is not None else image_span
    spans = []
    for name, span, mask in (("text_span", text_span, text), ("image_span", image_span, image)):
        if span is not None:
            if (not isinstance(span, (tuple, list)) or len(span) != 2
                    or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in span)):
                raise TypeError(f"{func}: argument {name!r} must be a pair of ints (lo, hi); got {span!r}")
            lo, hi = int(span[0]), int(span[1])
            if not 0 <= lo <= hi or (known(n) is not None and hi > n):
                raise ValueError(f"{func}: argument {name!r} must satisfy 0 <= lo <= hi <= {n}; got {span!r}")
            span = (lo, hi) if hi > lo else None  # an empty span: no item at all; use the full width
            if span is not None and is_host_concrete(mask):
                import numpy as np

                m = np.asarray(mask)
                outside = m[:, :lo].any() or m[:, hi:].any()
                if outside:
                    raise ValueError(f"{func}: argument {name!r} = {span} does not hold every item: the mask has "
                                     f"items outside columns [{lo}, {hi})")
        spans.append(span)
    return Items(text, image), Spans(spans[0], spans[1])




class ColumnBlock(NamedTuple):
    """The block softmax over one modality's columns, for every row:
    ``p``/``log_p`` ``(B, H', N, W)`` hold the row softmax over this modality's
    items among the columns ``lo <= j < hi`` (``W = hi - lo``; 0 at other
    columns). ``log_p`` is None when heads are averaged (logs are taken where
    needed)."""

    p: Any
    log_p: Any
    lo: int
    hi: int

    def rows(self, lo: int, hi: int, xp: Any) -> tuple[Any, Any]:
        """``(p, log_p)`` of the rows ``lo <= i < hi``."""
        p = self.p[..., lo:hi, :]
        return p, (safe_log(p, xp) if self.log_p is None else self.log_p[..., lo:hi, :])


def block_softmax(s: Any, items: Items, *, heads: str, inputs: str, spans: Spans = Spans(),
                  xp: Any) -> tuple[ColumnBlock, ColumnBlock]:
    """Block softmax (paper Eq. 6): ``sigma(S_xy)``, the row softmax over the
    columns of one modality only, for the text columns (``S_LL``, ``S_VL``)
    and the image columns (``S_LV``, ``S_VV``) at once.

    ``s``: ``(B, H, N, N)`` scores (or probabilities with ``inputs="probs"``,
    logged first: inside a block the result is the same). ``heads``:
    ``"mean_probs"`` averages the block probabilities over heads,
    ``"mean_scores"`` the scores before the softmax, ``"per_head"`` keeps
    every head (``H' = 1`` or ``H``). Each block reads only its column span
    (all ``N`` columns without a hint). Returns ``(text, image)``
    :class:`ColumnBlock`\\ s; rows are still every position (mask them).

    >>> import numpy as np, array_api_compat.numpy as xp
    >>> items = Items(np.array([[True, True, False]]), np.array([[False, False, True]]))
    >>> text, image = block_softmax(np.zeros((1, 1, 3, 3)), items, heads="per_head", inputs="scores", xp=xp)
    >>> text.p[0, 0].tolist(), image.p[0, 0, 0].tolist()
    ([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], [0.0, 0.0, 1.0])
    """
    if inputs == "probs":
        s = safe_log(s, xp)
    if heads == "mean_scores":
        s = xp.mean(s, axis=1, keepdims=True)
    n = s.shape[-1]
    out = []
    for mask, span in ((items.text, spans.text), (items.image, spans.image)):
        lo, hi = span if span is not None else (0, n)
        cols = mask[:, None, None, lo:hi]
        if heads == "mean_probs":
            p = softmax(s[..., lo:hi] + column_bias(cols, s.dtype, xp), xp)
            out.append(ColumnBlock(xp.mean(p, axis=1, keepdims=True), None, lo, hi))
        else:
            log_p, p = masked_log_softmax(s[..., lo:hi], cols, xp)
            out.append(ColumnBlock(p, log_p, lo, hi))
    return out[0], out[1]


def widen(text: ColumnBlock, image: ColumnBlock, items: Items, xp: Any) -> Any:
    """The probabilities of the two column blocks of :func:`block_softmax` as
    one full-width ``(B, H', N, N)`` array: text columns normalised over the
    text items, image columns over the image items, other columns 0."""
    n = items.text.shape[-1]

    def pad(x: Any, g: ColumnBlock) -> Any:
        head = tuple(x.shape[:-1])
        pieces = []
        if g.lo > 0:
            pieces.append(xp.zeros(head + (g.lo,), dtype=x.dtype, device=device_of(x, xp)))
        pieces.append(x)
        if g.hi < n:
            pieces.append(xp.zeros(head + (n - g.hi,), dtype=x.dtype, device=device_of(x, xp)))
        return xp.concat(pieces, axis=-1) if len(pieces) > 1 else x

    p_t = pad(text.p, text)
    zero = xp.zeros_like(p_t)
    return xp.where(items.text[:, None, None, :], p_t,
                    xp.where(items.image[:, None, None, :], pad(image.p, image), zero))
