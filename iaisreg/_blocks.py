"""Which positions are linguistic (L) and visual (V) items, and the block
partition of the score matrix (paper Eq. 6) with a masked block softmax.

Everything works on the full ``(N, N)`` matrix with boolean masks, so no
shape depends on the data: no host synchronisation, and the same code runs
under ``jax.jit``, ``tf.function`` and ``torch.compile``.
"""
from __future__ import annotations

import numbers
from typing import Any, NamedTuple

from ._namespace import is_host_concrete
from ._ops import device_of, log_softmax, softmax
from ._validate import check_int, dtype_name, shape_of

__all__ = ["Items", "Spans", "item_masks", "resolve_items", "masks_from_lengths", "column_bias", "block_softmax", "two_block_log_softmax", "block_log_softmax"]


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
    shape = shape_of(x)
    if shape not in ((b, n), (n,)):
        raise ValueError(f"{func}: argument {name!r} must have shape ({b}, {n}) or ({n},); got {shape}")
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
    if shape == (n,):
        m = xp.broadcast_to(m[None, :], (b, n))
    return m


def _as_lengths(x: Any, *, name: str, b: int, xp: Any, func: str) -> Any:
    shape = shape_of(x)
    if shape != (b,):
        raise ValueError(f"{func}: argument {name!r} must be an int or an integer array of shape ({b},); got shape {shape}")
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
    >>> t, v = masks_from_lengths(6, np.array([2, 1]), np.array([2, 3]), text_start=1, image_start=4)
    >>> t.astype(int).tolist(), v.astype(int).tolist()
    ([[0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]], [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]])
    """
    from ._namespace import get_namespace

    func = "masks_from_lengths"
    n = check_int("n", n, func=func, low=0)
    arrays = [a for a in (text_lengths, image_lengths, text_start, image_start) if hasattr(a, "shape")]
    if not arrays:
        raise TypeError(f"{func}: at least one of 'text_lengths'/'image_lengths' must be an array of shape (B,)")
    xp = get_namespace(*arrays, xp=xp)
    b = shape_of(arrays[0])[0]
    dev = device_of(arrays[0], xp)
    pos = _positions(n, xp, dev)

    def col(v: Any, name: str) -> Any:
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            return v
        return xp.astype(_as_lengths(v, name=name, b=b, xp=xp, func=func), pos.dtype)[:, None]

    ts = col(text_start, "text_start")
    tl = col(text_lengths, "text_lengths")
    il = col(image_lengths, "image_lengths")
    is_ = ts + tl if image_start is None else col(image_start, "image_start")
    text = (pos >= ts) & (pos < ts + tl)
    image = (pos >= is_) & (pos < is_ + il)
    text = xp.broadcast_to(text, (b, n))
    image = xp.broadcast_to(image, (b, n))
    return Items(text, image)


def item_masks(b: int, n: int, **kwargs: Any) -> Items:
    """Resolve the ways of saying which positions are text and image items;
    see :func:`resolve_items` (this returns only the masks)."""
    return resolve_items(b, n, **kwargs)[0]


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
            lens = _as_lengths(n_text, name="n_text", b=b, xp=xp, func=func)
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
        image_span = (int(n_text), n) if image_span is None else image_span
    spans = []
    for name, span, mask in (("text_span", text_span, text), ("image_span", image_span, image)):
        if span is not None:
            if (not isinstance(span, (tuple, list)) or len(span) != 2
                    or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in span)):
                raise TypeError(f"{func}: argument {name!r} must be a pair of ints (lo, hi); got {span!r}")
            lo, hi = int(span[0]), int(span[1])
            if not 0 <= lo <= hi <= n:
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


#: added to the scores of columns outside a block; exp() of it is exactly 0
#: in float32/float64 (16-bit inputs are computed in float32).
_MASK_VALUE = -1e30


def column_bias(cols: Any, dtype: Any, xp: Any) -> Any:
    """``0`` on the block's columns, a huge negative number elsewhere:
    ``softmax(s + column_bias(cols))`` is the row softmax over the block's
    columns only (exact: the masked terms are exactly 0)."""
    zero = xp.zeros(cols.shape, dtype=dtype, device=device_of(cols, xp))
    return xp.where(cols, zero, xp.asarray(_MASK_VALUE, dtype=dtype, device=device_of(cols, xp)))


def block_softmax(s: Any, cols: Any, xp: Any) -> Any:
    """Row softmax of ``s`` ``(..., N, N)`` over the columns in ``cols``
    (boolean, broadcastable to ``(..., 1, N)``). Columns outside the block
    get 0 when the block is non-empty; a row whose block is empty gets a
    finite uniform row (callers mask it)."""
    return softmax(s + column_bias(cols, s.dtype, xp), xp)


def two_block_log_softmax(s: Any, col_a: Any, col_b: Any, xp: Any) -> tuple[Any, Any]:
    """Row softmax of ``s`` restricted to the columns of group ``a`` and,
    separately, of group ``b`` (the two column blocks of paper Eq. 6).

    ``s``: ``(..., N, N)``; ``col_a``, ``col_b``: disjoint boolean column masks
    broadcastable to ``s`` (``(..., 1, N)``). Returns ``(log_p, p)``: at a
    column of group ``a``, ``log_p``/``p`` are the log-probability/probability
    within group ``a`` (likewise ``b``); at columns in neither group ``p`` is 0
    and ``log_p`` is 0. Each group is normalised on its own, so the result is
    exact even when the two groups' scores are far apart; a row whose group is
    empty stays finite.
    """
    zero = xp.zeros_like(s)
    la = log_softmax(s + column_bias(col_a, s.dtype, xp), xp)
    lb = log_softmax(s + column_bias(col_b, s.dtype, xp), xp)
    log_p = xp.where(col_a, la, xp.where(col_b, lb, zero))
    p = xp.where(col_a | col_b, xp.exp(log_p), zero)
    return log_p, p


def block_log_softmax(s: Any, cols: Any, xp: Any) -> tuple[Any, Any]:
    """Row softmax of ``s`` over the columns in ``cols`` only: ``(log_p, p)``,
    both 0 outside the block; see :func:`two_block_log_softmax`."""
    zero = xp.zeros_like(s)
    lp = log_softmax(s + column_bias(cols, s.dtype, xp), xp)
    log_p = xp.where(cols, lp, zero)
    p = xp.where(cols, xp.exp(lp), zero)
    return log_p, p
