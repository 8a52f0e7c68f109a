"""Which positions are linguistic (L) and visual (V) items, and the block
softmax of the score matrix (paper Eq. 6).

Blocks are selected with boolean masks (``where``), never by an additive
bias, so nothing outside a block reaches the loss. A block covers all ``N``
rows and columns unless static ranges holding every item are known: from an
int ``n_text``, or read from masks whose values are already on the host
(NumPy, eager CPU tensors). Device and traced masks are never read: no host
synchronisation, and the same code runs under ``jax.jit``, ``tf.function``
and ``torch.compile``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

from ._divergence import safe_log
from ._namespace import as_array, get_namespace, is_host_concrete, shapes_from_values
from ._ops import device_of, masked_softmax, sizes, split, stop_gradient
from ._validate import check_int, dtype_name, known, matches, shape_of, show
from ._values import check_spans

__all__ = ["Items", "Ranges", "resolve_items", "item_ranges", "masks_from_lengths", "block_softmax", "Block",
           "Blocks"]


class Items(NamedTuple):
    """Per-sample membership masks, both ``(B, N)`` booleans."""

    text: Any
    image: Any


class Ranges(NamedTuple):
    """Static ``(lo, hi)`` ranges (Python ints) of the positions that hold every
    text / every image item of every sample; a block then reads only the rows
    and columns of its modalities' ranges."""

    text: tuple[int, int]
    image: tuple[int, int]


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
) -> Items:
    """Resolve the ways of saying which positions are text and image items.

    * ``n_text`` int: positions ``< n_text`` are text, the rest image;
    * ``n_text`` ``(B,)`` integer array: per-sample split point;
    * ``text_mask`` and/or ``image_mask`` ``(B, N)`` or ``(N,)``: explicit
      membership (one alone: the other modality is its complement);
    * ``attention_mask``: valid (non-padding) positions, intersected with both.
    """
    have_masks = text_mask is not None or image_mask is not None
    if n_text is not None and have_masks:
        raise ValueError(f"{func}: give either 'n_text' or 'text_mask'/'image_mask', not both")
    if n_text is None and not have_masks:
        raise ValueError(f"{func}: say which positions are text: give 'n_text' (int or (B,) lengths) or 'text_mask'/'image_mask'")
    if n_text is not None:
        text = _text_from_split(n_text, b, n, xp=xp, dev=dev, func=func)
        image = ~text
    else:
        text, image = _items_from_masks(text_mask, image_mask, b, n, xp=xp, dev=dev, func=func)
        if text_mask is not None and image_mask is not None and check_overlap is not False:
            _check_disjoint(text, image, func)
    if attention_mask is not None:
        valid = _as_bool_mask(attention_mask, name="attention_mask", b=b, n=n, xp=xp, dev=dev, func=func)
        text = text & valid
        image = image & valid
    return Items(text, image)


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _text_from_split(n_text: Any, b: int, n: int, *, xp: Any, dev: Any, func: str) -> Any:
    """``(B, N)`` text membership from an int or ``(B,)`` split point."""
    pos = _positions(n, xp, dev)
    if _is_int(n_text):
        k = check_int("n_text", n_text, func=func, low=0, high=n)
        return xp.broadcast_to(pos < k, (b, n))
    if isinstance(n_text, (bool, float, str)) or not hasattr(n_text, "shape"):
        raise TypeError(f"{func}: argument 'n_text' must be an int or an integer array of shape ({b},); got {type(n_text).__name__} {n_text!r}")
    lens = _as_lengths(n_text, name="n_text", b=b, xp=xp, dev=dev, func=func)
    if is_host_concrete(lens):
        import numpy as np

        arr = np.asarray(lens)
        if arr.size and (arr.min() < 0 or arr.max() > n):
            raise ValueError(f"{func}: argument 'n_text' must hold lengths in [0, {n}]; got {arr.tolist()}")
    return pos < xp.astype(lens, pos.dtype)[:, None]  # TensorFlow does not promote int32/int64


def _items_from_masks(text_mask: Any, image_mask: Any, b: int, n: int, *, xp: Any, dev: Any,
                      func: str) -> tuple[Any, Any]:
    """``(text, image)`` ``(B, N)`` booleans from one or both masks (one alone:
    the other modality is its complement)."""
    text = image = None
    if text_mask is not None:
        text = _as_bool_mask(text_mask, name="text_mask", b=b, n=n, xp=xp, dev=dev, func=func)
    if image_mask is not None:
        image = _as_bool_mask(image_mask, name="image_mask", b=b, n=n, xp=xp, dev=dev, func=func)
    if text is None:
        text = ~image
    elif image is None:
        image = ~text
    return text, image


def _check_disjoint(text: Any, image: Any, func: str) -> None:
    """Raise when a position is both a text and an image item (only when the
    masks' values are on the host)."""
    if not (is_host_concrete(text) and is_host_concrete(image)):
        return
    import numpy as np

    both = np.asarray(text) & np.asarray(image)
    if both.any():
        where = np.argwhere(both)[:5].tolist()
        raise ValueError(
            f"{func}: arguments 'text_mask' and 'image_mask' overlap: a position cannot be both a text "
            f"and an image item; overlapping (sample, position) pairs include {where}"
        )


def item_ranges(items: Items, n: int, *, n_text: Any = None) -> Ranges | None:
    """The :class:`Ranges` of the items, or None when they are not known
    statically: read from the masks when a shape may follow their values
    (:func:`~iaisreg._namespace.shapes_from_values`: NumPy, eager CPU torch
    and TensorFlow), else ``(0, n_text)`` / ``(n_text, N)`` for an int
    ``n_text`` when ``N`` is known (an int, or a symbolic size of
    ``torch.compile(dynamic=True)``; not a ``None`` size of ``tf.function``).
    None as well when a modality has no item at all (every loss is 0 then;
    the full width keeps the graph)."""
    if shapes_from_values(items.text) and shapes_from_values(items.image):
        import numpy as np

        found = []
        for mask in (items.text, items.image):
            cols = np.flatnonzero(np.asarray(mask).any(axis=0))
            found.append((int(cols[0]), int(cols[-1]) + 1) if cols.size else None)
    elif _is_int(n_text) and known(n) is not None:
        found = [(0, int(n_text)), (int(n_text), n)]
    else:
        return None
    if any(r is None or r[0] == r[1] for r in found):
        return None
    return Ranges(*found)


def block_softmax(s: Any, cond: Any, *, heads: str, xp: Any, finite: bool = False) -> tuple[Any, Any]:
    """Block softmax (paper Eq. 6): ``sigma(S_xy)``, the row softmax of the
    scores over the columns of one modality only.

    ``s``: ``(B, H, R, C)`` scores; ``cond``: ``(B, 1, R, C)`` booleans, the
    entries of the block (rows: items of x, columns: items of y), or of
    several blocks that share no row (e.g. ``S_LL`` and ``S_VV`` at once:
    each row is normalised over its own entries). ``heads="mean_probs"``
    averages the probabilities over heads (``H' = 1``, no ``log_p``); else
    every head is kept with its exact log-probabilities. Returns ``(p,
    log_p)``, ``(B, H', R, C)``, as :func:`~iaisreg._ops.masked_softmax`:
    exactly 0 off the block in its rows, finite (meaningless) in rows
    without an entry; values outside ``cond`` never matter. ``finite``: every
    score is known to be finite (a faster, identical computation).

    >>> import numpy as np, array_api_compat.numpy as xp
    >>> cond = np.array([[True, True, False], [True, True, False], [False, False, True]])[None, None]
    >>> p, _ = block_softmax(np.zeros((1, 1, 3, 3)), cond, heads="mean_probs", xp=xp)
    >>> p[0, 0].tolist()
    [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    """
    if heads == "mean_probs":
        p, _ = masked_softmax(s, cond, xp, finite=finite)
        return xp.mean(p, axis=1, keepdims=True), None
    return masked_softmax(s, cond, xp, log=True, finite=finite)


def _host_finite(s: Any, xp: Any) -> bool:
    """True when every score is known to be finite: their sum is, read only
    when the values are on the host (never on a device or under a trace)."""
    return is_host_concrete(s) and math.isfinite(float(xp.sum(stop_gradient(s, xp))))


def _increasing(points: list) -> list:
    """``points`` (non-decreasing) without repeats, comparing neighbours only:
    a size left symbolic by ``torch.compile(dynamic=True)`` is never hashed
    (a set would fix it to one value, and compile again for the next)."""
    out = points[:1]
    for v in points[1:]:
        if v is not out[-1] and v != out[-1]:
            out.append(v)
    return out


class Block(NamedTuple):
    """One block ``sigma(S_rc)`` as the losses read it: ``p``/``log_p``
    ``(B, H', R, C)`` from :func:`block_softmax` (``log_p`` None with
    ``heads="mean_probs"``: see :meth:`log`), and the item masks of the row
    modality ``rows`` ``(B, 1, R, 1)`` and of the column modality ``cols``
    ``(B, 1, 1, C)``. ``R``/``C`` are the modalities' ranges (or ``N``)."""

    p: Any
    log_p: Any
    rows: Any
    cols: Any

    def log(self, xp: Any) -> Any:
        """``log p``: the exact ``log_p``, or ``log(max(p, smallest normal))``."""
        return safe_log(self.p, xp) if self.log_p is None else self.log_p


class Blocks:
    """The blocks of Eq. 6 of one score array, each computed once, when a
    loss first asks for it: ``blocks("V", "L")`` is the :class:`Block`
    ``sigma(S_VL)``.

    With :class:`Ranges`, a block reads only the rows of its row modality's
    range and the columns of its column modality's range. Without, every
    block spans all ``N`` positions, and the blocks that share rows share one
    softmax: ``S_LL`` with ``S_VV`` (same modality), ``S_LV`` with ``S_VL``
    (cross-modal), each one pass over the scores.

    ``s``: ``(B, H, N, N)`` scores, or probabilities with ``inputs="probs"``
    (logged: inside a block the result is the same); ``heads``:
    ``"mean_probs"``, ``"per_head"`` or ``"mean_scores"`` (the scores are
    averaged over heads first).
    """

    def __init__(self, s: Any, items: Items, *, heads: str, inputs: str, ranges: Ranges | None, xp: Any) -> None:
        self.s, self.items, self.heads, self.inputs, self.xp = s, items, heads, inputs, xp
        n = s.shape[-1]
        self.full_width = ranges is None
        self.ranges = {"L": (0, n), "V": (0, n)} if ranges is None else {"L": ranges.text, "V": ranges.image}
        (a0, a1), (b0, b1) = self.ranges.values()
        # disjoint ranges: the scores are split at their ends (rows once, then the columns of each row piece)
        self._edges = None
        if ranges is not None and (a1 <= b0 or b1 <= a0):
            (p0, p1), (q0, q1) = (ranges.text, ranges.image) if a1 <= b0 else (ranges.image, ranges.text)
            self._edges = _increasing([0, p0, p1, q0, q1, n])
        self._pieces: dict = {}
        self._done: dict = {}
        self.finite = _host_finite(s, xp)

    def __call__(self, rows: str, cols: str) -> Block:
        (r0, r1), (c0, c1) = self.ranges[rows], self.ranges[cols]
        row_items = self._mask(rows)[:, None, r0:r1, None]
        col_items = self._mask(cols)[:, None, None, c0:c1]
        key = (rows == cols) if self.full_width else (rows, cols)
        if key not in self._done:
            cond = self._shared_cond(rows == cols) if self.full_width else row_items & col_items
            s = self._scores(self._cut(rows, cols), cond)
            self._done[key] = block_softmax(s, cond, heads=self.heads, xp=self.xp, finite=self.finite)
        p, log_p = self._done[key]
        return Block(p, log_p, row_items, col_items)

    def _cut(self, rows: str, cols: str) -> Any:
        """The scores of the rows of ``rows``' range and the columns of ``cols``'."""
        if self.full_width:
            return self.s
        (r0, r1), (c0, c1) = self.ranges[rows], self.ranges[cols]
        if self._edges is None:
            return self.s[..., r0:r1, c0:c1]
        edges = self._edges
        if "rows" not in self._pieces:
            self._pieces["rows"] = split(self.s, edges, self.xp, axis=-2)
        if rows not in self._pieces:
            self._pieces[rows] = split(self._pieces["rows"][edges.index(r0)], edges, self.xp, axis=-1)
        return self._pieces[rows][edges.index(c0)]

    def _mask(self, modality: str) -> Any:
        return self.items.text if modality == "L" else self.items.image

    def _shared_cond(self, same: bool) -> Any:
        t, v = self.items.text, self.items.image
        tr, vr = t[:, None, :, None], v[:, None, :, None]
        tc, vc = (t, v) if same else (v, t)
        return (tr & tc[:, None, None, :]) | (vr & vc[:, None, None, :])

    def _scores(self, s: Any, cond: Any) -> Any:
        """The scores a block softmaxes: probabilities logged (unless all are
        known finite, values outside the block are replaced by 1 first, so
        nothing there reaches the gradient), and averaged over heads for
        ``heads="mean_scores"``."""
        xp = self.xp
        if self.inputs == "probs":
            if not self.finite:
                s = xp.where(cond, s, xp.asarray(1.0, dtype=s.dtype, device=device_of(s, xp)))
            s = safe_log(s, xp)
        if self.heads == "mean_scores":
            s = xp.mean(s, axis=1, keepdims=True)
        return s
