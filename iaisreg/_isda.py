"""ISDa: intra-modal self-attention distance with annotation (paper Sec.
2.2-2.3, Eq. 7-9), from object annotations such as Flickr30k Entities."""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from ._blocks import Blocks, resolve_items
from ._divergence import mkl_terms, safe_log
from ._namespace import as_array, compute_dtype, get_namespace
from ._ops import device_of
from ._options import OPTIONS, resolve_options, takes_options
from ._validate import check_scores, dtype_name, shape_of

__all__ = ["isda", "cps", "IsdaResult", "groups_to_masks", "ISDA_OPTIONS"]

#: the options :func:`isda` shares with :func:`iaisreg.iais`: no ``"auto"``
#: heads (ISDa has no variant), and per-sample values by default.
ISDA_OPTIONS = {
    "heads": OPTIONS["heads"].narrowed("mean_probs", exclude=("auto",)),
    "inputs": OPTIONS["inputs"],
    "reduction": OPTIONS["reduction"].narrowed("none"),
}


class IsdaResult(NamedTuple):
    """``isda(..., return_matrices=True)``: per-sample ISDa ``(B,)``, the
    object-level text and image self-attention ``(B, H', K, K)`` (rows
    normalised over the valid objects) and which objects count ``(B, K)``."""

    value: Any
    text: Any
    image: Any
    objects: Any


def groups_to_masks(groups: Any, b: int, n: int, *, name: str, xp: Any, dev: Any, func: str = "isda") -> Any:
    """Object groups -> ``(B, K, N)`` boolean membership.

    Accepted: an array ``(B, K, N)`` or ``(K, N)`` (boolean or 0/1 integers);
    a list over objects of position lists (one sample; ``B`` must be 1 or the
    groups are shared by every sample); or a list over samples of such lists
    (``K`` padded with empty objects)."""
    import numpy as np

    if hasattr(groups, "shape") and hasattr(groups, "dtype"):
        groups = as_array(groups, xp=xp, dev=dev, name=name, func=func)
        shape = shape_of(groups)
        if len(shape) == 2:
            groups = groups[None, ...]
            shape = (1,) + shape
        if len(shape) != 3 or shape[0] not in (1, b) or shape[2] != n:
            raise ValueError(f"{func}: argument {name!r} must have shape ({b}, K, {n}) or (K, {n}); got {tuple(shape_of(groups))}")
        if groups.dtype != xp.bool:
            if not xp.isdtype(groups.dtype, "integral"):
                raise TypeError(f"{func}: argument {name!r} must be boolean or 0/1 integers; got dtype {dtype_name(groups.dtype)}")
            groups = groups != 0
        return xp.broadcast_to(groups, (b, shape[1], n))
    if not isinstance(groups, Sequence) or isinstance(groups, (str, bytes)):
        raise TypeError(f"{func}: argument {name!r} must be an array (B, K, N) or nested lists of positions; got {type(groups).__name__}")

    def is_positions(x: Any) -> bool:
        return isinstance(x, Sequence) and not isinstance(x, (str, bytes)) and all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in x)

    if all(is_positions(g) for g in groups):
        per_sample = [groups]
    elif all(isinstance(s, Sequence) and all(is_positions(g) for g in s) for s in groups):
        per_sample = list(groups)
    else:
        raise TypeError(f"{func}: argument {name!r} must be a list (per object) of lists of int positions, "
                        "or a list (per sample) of those")
    if len(per_sample) not in (1, b):
        raise ValueError(f"{func}: argument {name!r} describes {len(per_sample)} samples; the scores hold {b}")
    k = max((len(s) for s in per_sample), default=0)
    out = np.zeros((len(per_sample), k, n), dtype=bool)
    for bi, sample in enumerate(per_sample):
        for ki, pos in enumerate(sample):
            for p in pos:
                if not 0 <= p < n:
                    raise ValueError(f"{func}: argument {name!r}: position {p} of object {ki} (sample {bi}) is outside [0, {n})")
                out[bi, ki, p] = True
    arr = xp.asarray(out, device=dev)
    return xp.broadcast_to(arr, (b, k, n))


def cps(p: Any, row_groups: Any, col_groups: Any, xp: Any) -> Any:
    """Cps (paper Eq. 7) for every pair of objects at once: entry ``(k, l)`` is
    the sum of the attention patch (rows of object ``k``, columns of object
    ``l``) divided by the number of its rows.

    ``p``: ``(B, H, N, N)``; groups: ``(B, K, N)`` booleans. Returns ``(B, H, K, K)``."""
    dt = p.dtype
    gr = xp.astype(row_groups, dt)[:, None, :, :]
    gc = xp.astype(col_groups, dt)[:, None, :, :]
    total = xp.matmul(xp.matmul(gr, p), xp.matrix_transpose(gc))
    rows = xp.sum(gr, axis=-1)[..., None]
    one = xp.asarray(1.0, dtype=dt, device=device_of(p, xp))
    return total / xp.maximum(rows, one)


@takes_options(ISDA_OPTIONS)
def isda(
    scores: Any,
    text_groups: Any,
    image_groups: Any,
    n_text: Any = None,
    *,
    text_mask: Any = None,
    image_mask: Any = None,
    attention_mask: Any = None,
    return_matrices: bool = False,
    xp: Any = None,
    **options: str,
) -> Any:
    """ISDa (paper Eq. 9): m-KL between the object-level linguistic and visual
    self-attention matrices.

    The intra-modal blocks ``S_LL``/``S_VV`` are block-softmaxed (over the
    text items / image items), averaged over heads (``heads="mean_probs"``,
    as the authors' IAIS code does; ``"per_head"`` gives the mean of per-head
    ISDa; ``"mean_scores"`` averages scores first), reduced to object level
    with Cps (Eq. 7), and each object row is renormalised over the objects
    that count so the rows are distributions (the paper leaves this
    implicit). m-KL is the plain sum over object rows (Eq. 8).

    Args:
        scores: ``(B, H, N, N)`` or ``(B, N, N)`` scores (or probabilities with
            ``inputs="probs"``).
        text_groups, image_groups: object ``k``'s token positions and region
            positions; ``(B, K, N)`` / ``(K, N)`` masks or nested lists (see
            :func:`groups_to_masks`). Positions outside the text (image)
            items are ignored. Objects with no token or no region are skipped.
        n_text, text_mask, image_mask, attention_mask: which positions are
            text/image items, as for :func:`iaisreg.iais`.
        return_matrices: also return the object-level matrices.
        heads, inputs, reduction: as for :func:`iaisreg.iais`, except that
            ``heads`` has no ``"auto"`` (default ``"mean_probs"``) and
            ``reduction`` defaults to ``"none"`` -> ``(B,)``.

    A sample with fewer than one object present in both modalities has ISDa 0.

    >>> import numpy as np
    >>> s = np.zeros((1, 6, 6))  # uniform attention everywhere
    >>> float(isda(s, [[0], [1, 2]], [[3], [4, 5]], 3)[0])
    0.0
    """
    func = "isda"
    opts = resolve_options(func, options, ISDA_OPTIONS)
    b, _, n = check_scores(scores, func=func, name="scores")
    xp = get_namespace(scores, xp=xp)
    dt = compute_dtype(scores.dtype, xp, name="scores", func=func)
    dev = device_of(scores, xp)
    items = resolve_items(b, n, n_text=n_text, text_mask=text_mask, image_mask=image_mask,
                          attention_mask=attention_mask, xp=xp, dev=dev, func=func)
    tg = groups_to_masks(text_groups, b, n, name="text_groups", xp=xp, dev=dev)
    ig = groups_to_masks(image_groups, b, n, name="image_groups", xp=xp, dev=dev)
    if shape_of(tg)[1] != shape_of(ig)[1]:
        raise ValueError(f"{func}: 'text_groups' and 'image_groups' must describe the same objects; "
                         f"got {shape_of(tg)[1]} and {shape_of(ig)[1]} objects")
    tg = tg & items.text[:, None, :]
    ig = ig & items.image[:, None, :]
    present = xp.any(tg, axis=-1) & xp.any(ig, axis=-1)  # (B, K)

    s = scores if scores.dtype == dt else xp.astype(scores, dt)
    if s.ndim == 3:
        s = s[:, None, :, :]
    # S_LL and S_VV in one softmax (full width); Cps reads only their entries
    p = Blocks(s, items, heads=opts["heads"], inputs=opts["inputs"], ranges=None, xp=xp)("L", "L").p
    obj_t = cps(p, tg, tg, xp)
    obj_v = cps(p, ig, ig, xp)

    pair = present[:, None, :, None] & present[:, None, None, :]
    zero = xp.zeros_like(obj_t)

    def normalise(m: Any) -> Any:
        m = xp.where(pair, m, zero)
        tot = xp.sum(m, axis=-1, keepdims=True)
        one = xp.asarray(1.0, dtype=dt, device=dev)
        return m / xp.where(tot > 0, tot, one)

    obj_t = normalise(obj_t)
    obj_v = normalise(obj_v)
    per = mkl_terms(obj_t, safe_log(obj_t, xp), obj_v, safe_log(obj_v, xp), pair, xp)
    per = xp.mean(per, axis=1)
    if opts["reduction"] == "mean":
        value = xp.mean(per)
    elif opts["reduction"] == "sum":
        value = xp.sum(per)
    else:
        value = per
    if return_matrices:
        return IsdaResult(value, obj_t, obj_v, present)
    return value
