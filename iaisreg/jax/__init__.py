"""JAX adapter: :func:`iais`, :func:`isda`, :func:`m_kl`,
:func:`masks_from_lengths` on ``jax.Array``, a compiled :func:`iais_jit`, an
:class:`IAISLoss` holding the options and the ``lambda_t`` schedule,
:func:`attention_scores` for Flax-layout queries and keys, and
:func:`lambda_schedule`, an optax-style ``count -> weight`` schedule.

All math lives in the backend-neutral core; this module only checks types
and adds conveniences. Every function traces under ``jax.jit``, ``jax.grad``
and ``jax.vmap``: the option strings and an ``int`` ``n_text`` must be
static (closed over, ``static_argnames``, or use :func:`iais_jit`), arrays
(scores, masks, ``(B,)`` lengths) may be traced.

Float64 needs ``jax.config.update("jax_enable_x64", True)``; without it JAX
computes in float32 (float16/bfloat16 inputs are always computed in float32).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

import iaisreg as _core
from iaisreg import schedules as _schedules
from iaisreg._blocks import resolve_items as _resolve_items
from iaisreg._namespace import compute_dtype as _compute_dtype
from iaisreg._namespace import is_host_concrete as _is_host_concrete
from iaisreg._options import OPTIONS as _OPTIONS
from iaisreg._options import resolve_options as _resolve_options
from iaisreg._options import takes_options as _takes_options
from iaisreg._validate import check_scores as _check_scores
from iaisreg._values import check_probabilities as _check_probabilities

__all__ = [
    "iais", "iais_jit", "isda", "m_kl", "masks_from_lengths", "IAISLoss", "attention_scores",
    "lambda_schedule", "STATIC_ARGNAMES", "xp",
]

#: the array namespace the core runs on for ``jax.Array`` (``jax.numpy``)
xp = jnp

#: the arguments of :func:`iais` that must be static under ``jax.jit``
#: (plus ``n_text`` when it is a Python int).
STATIC_ARGNAMES = (*_OPTIONS, "check_overlap")


def _as_array(x: Any, name: str, func: str) -> Any:
    """``jax.Array`` (tracers included) as is; NumPy arrays converted."""
    if isinstance(x, jax.Array):
        return x
    if isinstance(x, (np.ndarray, np.generic)):
        return jnp.asarray(x)
    raise TypeError(f"{func}: argument {name!r} must be a jax.Array (or a NumPy array); got {type(x).__name__}")


def iais(attn: jax.Array, n_text: Any = None, **kwargs: Any) -> jax.Array:
    """:func:`iaisreg.iais` for ``jax.Array`` (same arguments): ``attn``
    ``(B, H, N, N)`` or ``(B, N, N)`` -> scalar, or ``(B,)`` with
    ``reduction="none"``.

    Traceable: inside ``jax.jit`` keep the options (and an ``int`` ``n_text``)
    static, e.g. ``jax.jit(iais, static_argnames=("n_text", *STATIC_ARGNAMES))``
    or a closure; masks and ``(B,)`` lengths may be traced.

    >>> import jax, jax.numpy as jnp, iaisreg.jax
    >>> s = jax.random.normal(jax.random.key(0), (2, 4, 8, 8))
    >>> g = jax.grad(lambda s: iaisreg.jax.iais(s, 4, mode="distributed"))(s)
    >>> g.shape
    (2, 4, 8, 8)
    """
    attn = _as_array(attn, "attn", "iais")
    return _core.iais(attn, n_text, xp=jnp, **kwargs)


@functools.partial(jax.jit, static_argnames=("n_text_static", "options", "check_overlap"))
def _iais_compiled(attn: Any, n_text_array: Any, text_mask: Any, image_mask: Any, attention_mask: Any, *,
                   n_text_static: Any, options: tuple, check_overlap: Any) -> Any:
    n_text = n_text_static if n_text_array is None else n_text_array
    return _core.iais(attn, n_text, text_mask=text_mask, image_mask=image_mask, attention_mask=attention_mask,
                      check_overlap=check_overlap, xp=jnp, **dict(options))


def _host_value_checks(attn: Any, n_text: Any, masks: dict, check_overlap: Any, inputs: str) -> None:
    """The value checks the core makes on host values (``n_text`` lengths in
    range, ``text_mask``/``image_mask`` disjoint, probabilities in ``[0, 1]``),
    run before tracing so that :func:`iais_jit` raises what :func:`iais`
    raises. Skipped when a value is traced or not on the CPU."""
    b, _, n = _check_scores(attn, func="iais")
    _compute_dtype(attn.dtype, jnp, name="attn")
    values = [v for v in (n_text, *masks.values()) if hasattr(v, "shape")]
    probs = inputs == "probs" and _is_host_concrete(attn)
    if not (values or probs) or not all(_is_host_concrete(v) for v in values):
        return  # nothing to read: an int n_text is checked while tracing
    import array_api_compat.numpy as npx

    def host(v: Any) -> Any:
        return np.asarray(v) if hasattr(v, "shape") else v

    items = _resolve_items(b, n, n_text=host(n_text), **{k: host(v) for k, v in masks.items()}, xp=npx, dev="cpu",
                           func="iais", check_overlap=check_overlap)
    if probs:
        _check_probabilities(attn, jnp.asarray(items.text), jnp.asarray(items.image), jnp, func="iais")


@_takes_options()
def iais_jit(
    attn: jax.Array,
    n_text: Any = None,
    *,
    text_mask: Any = None,
    image_mask: Any = None,
    attention_mask: Any = None,
    check_overlap: bool | None = None,
    **options: str,
) -> jax.Array:
    """:func:`iais` compiled with ``jax.jit``: the options and an ``int``
    ``n_text`` are static (one compilation per combination and shape), the
    scores, masks and ``(B,)`` lengths are traced. Differentiable with
    ``jax.grad``. Called on concrete CPU values it makes the same value checks
    as :func:`iais` (``n_text`` range, overlapping masks, probabilities in
    ``[0, 1]`` with ``inputs="probs"``) before compiling.

    >>> import jax, jax.numpy as jnp
    >>> s = jax.random.normal(jax.random.key(0), (2, 4, 8, 8))
    >>> bool(jnp.allclose(iais_jit(s, 4, anchor="both"), iais(s, 4, anchor="both")))
    True
    """
    options = _resolve_options("iais", options)
    attn = _as_array(attn, "attn", "iais")
    masks = {k: v for k, v in (("text_mask", text_mask), ("image_mask", image_mask),
                               ("attention_mask", attention_mask)) if v is not None}
    _host_value_checks(attn, n_text, masks, check_overlap, options["inputs"])
    if hasattr(n_text, "shape") or n_text is None:
        n_text_array, n_text_static = n_text, None
    else:
        try:
            hash(n_text)
        except TypeError:  # not a valid n_text: let the core say why
            return iais(attn, n_text, **masks, **options, check_overlap=check_overlap)
        n_text_array, n_text_static = None, n_text
    return _iais_compiled(attn, n_text_array, text_mask, image_mask, attention_mask, n_text_static=n_text_static,
                          options=tuple(options.items()), check_overlap=check_overlap)


def isda(scores: jax.Array, text_groups: Any, image_groups: Any, n_text: Any = None, **kwargs: Any) -> Any:
    """:func:`iaisreg.isda` for ``jax.Array`` (same arguments)."""
    scores = _as_array(scores, "scores", "isda")
    return _core.isda(scores, text_groups, image_groups, n_text, xp=jnp, **kwargs)


def m_kl(a: jax.Array, b: jax.Array, **kwargs: Any) -> jax.Array:
    """:func:`iaisreg.m_kl` for ``jax.Array``: ``(..., n, m)`` -> ``(...,)``."""
    a = _as_array(a, "a", "m_kl")
    b = _as_array(b, "b", "m_kl")
    return _core.m_kl(a, b, xp=jnp, **kwargs)


def masks_from_lengths(n: int, text_lengths: Any, image_lengths: Any, **kwargs: Any) -> _core.Items:
    """:func:`iaisreg.masks_from_lengths` for ``jax.Array`` lengths: ``(B, N)`` masks.

    >>> import jax.numpy as jnp
    >>> t, v = masks_from_lengths(6, jnp.array([2, 1]), jnp.array([2, 2]), text_start=1, image_start=4)
    >>> t.astype(int).tolist()
    [[0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    """
    return _core.masks_from_lengths(n, text_lengths, image_lengths, xp=jnp, **kwargs)


def attention_scores(query: jax.Array, key: jax.Array, *, scale: float | None = None) -> jax.Array:
    """Pre-softmax attention scores ``Q K^T / sqrt(d)`` from queries and keys in
    the Flax layout (``flax.linen.MultiHeadDotProductAttention``,
    ``flax.nnx.MultiHeadAttention``): ``query`` ``(..., N, H, D)`` and ``key``
    ``(..., M, H, D)`` -> ``(..., H, N, M)``, the layout :func:`iais` takes.
    ``scale`` defaults to ``1 / sqrt(D)``, as Flax's
    ``dot_product_attention_weights``; the result is what Flax softmaxes
    before any mask or bias.

    >>> import jax.numpy as jnp
    >>> q = k = jnp.ones((2, 5, 4, 8))        # (batch, length, heads, head_dim)
    >>> attention_scores(q, k).shape
    (2, 4, 5, 5)
    """
    for name, x in (("query", query), ("key", key)):
        if not hasattr(x, "shape") or len(x.shape) < 3:
            shape = getattr(x, "shape", None)
            raise ValueError(f"attention_scores: argument {name!r} must have shape (..., N, H, D); got {shape}")
    if query.shape[-2:] != key.shape[-2:] or query.shape[:-3] != key.shape[:-3]:
        raise ValueError(f"attention_scores: 'query' (..., N, H, D) and 'key' (..., M, H, D) must agree on the batch "
                         f"axes, H and D; got {tuple(query.shape)} and {tuple(key.shape)}")
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    return jnp.einsum("...qhd,...khd->...hqk", query, key) * jnp.asarray(scale, dtype=query.dtype)


@dataclasses.dataclass(frozen=True, repr=False)
class _JaxSchedule(_schedules.FrameworkSchedule):
    framework: ClassVar[str] = "jax"

    def convert(self, step: Any) -> jax.Array:
        return jnp.asarray(step)


def lambda_schedule(name: str | _core.Schedule = "exp", total_steps: int | None = None, *, gamma: float = 5.0,
                    value: float = 1.0) -> Callable[[Any], jax.Array]:
    """An optax-style schedule for the IAIS weight: a function
    ``count -> lambda_t`` (a 0-d float array), safe under ``jax.jit``; the
    configuration is checked once, here. ``name``: ``"exp"``
    (``exp((t/T - 1) gamma)``, the paper's best), ``"linear"`` (``t/T``),
    ``"log"`` (``1 - exp(-t/T gamma)``) or ``"constant"`` (``value``); see
    :mod:`iaisreg.schedules` (a :class:`~iaisreg.schedules.Schedule` itself
    is taken too). Pass it wherever optax takes a schedule, e.g.
    ``optax.inject_hyperparams``, or call it on the step count in your train
    step. It pickles and compares by value.

    >>> f = lambda_schedule("exp", 100)
    >>> round(float(f(50)), 6), float(jax.jit(f)(jnp.asarray(100)))
    (0.082085, 1.0)
    >>> f
    iaisreg.jax.lambda_schedule(ExpSchedule(total_steps=100, gamma=5.0))
    """
    return _JaxSchedule(_schedules.named_or_given(name, total_steps, gamma, value, func="lambda_schedule"))


@dataclasses.dataclass(frozen=True)
class IAISLoss:
    """IAIS with its options and ``lambda_t`` schedule, as an immutable,
    hashable value (usable as a static argument of ``jax.jit`` or a field of
    a Flax module).

    ``loss(attn, n_text=None, *, step=None, **masks)`` returns
    ``lambda_t(step) * iais(attn, ...)`` (``lambda_t = 1`` when there is no
    schedule or no step). ``schedule``: ``None``, a name as
    :func:`lambda_schedule` (with ``total_steps``, ``gamma``), or any
    hashable callable ``step -> weight`` (e.g. a
    :class:`~iaisreg.schedules.Schedule`). Pickles and compares by value.

    >>> import jax, jax.numpy as jnp
    >>> crit = IAISLoss(mode="distributed", schedule="exp", total_steps=100)
    >>> s = jax.random.normal(jax.random.key(1), (2, 4, 8, 8))
    >>> bool(jnp.allclose(jax.jit(crit, static_argnums=1)(s, 3, step=100), iais(s, 3, mode="distributed")))
    True
    """

    mode: str = _OPTIONS["mode"].default
    anchor: str = _OPTIONS["anchor"].default
    variant: str = _OPTIONS["variant"].default
    heads: str = _OPTIONS["heads"].default
    reduction: str = _OPTIONS["reduction"].default
    inputs: str = _OPTIONS["inputs"].default
    schedule: str | Callable[[Any], Any] | None = None
    total_steps: int | None = None
    gamma: float = 5.0

    def __post_init__(self) -> None:
        _resolve_options("IAISLoss", self.options)
        _schedules.as_schedule(self.schedule, self.total_steps, gamma=self.gamma, func="IAISLoss")  # validates

    @property
    def options(self) -> dict:
        return {name: getattr(self, name) for name in _OPTIONS}

    def weight(self, step: Any) -> Any:
        """``lambda_t`` at ``step`` (1.0 without a schedule or a step)."""
        if self.schedule is None or step is None:
            return 1.0
        return jnp.asarray(_schedules.as_schedule(self.schedule, self.total_steps, gamma=self.gamma)(jnp.asarray(step)))

    def __call__(self, attn: jax.Array, n_text: Any = None, *, step: Any = None, **kwargs: Any) -> jax.Array:
        loss = iais(attn, n_text, **{**self.options, **kwargs})
        w = self.weight(step)
        return loss if (isinstance(w, float) and w == 1.0) else loss * w.astype(loss.dtype)
