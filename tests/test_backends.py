"""Every backend against the NumPy reference: loss and gradient, eager and
compiled (``jax.jit``, ``tf.function``, ``torch.compile``), on random shapes,
layouts (padding anywhere), item specifications, options and dtypes; and the
same exception with the same message for bad input on every backend.

References, both in float64 on the exact values a backend receives (the
input rounded to its dtype):

* loss: the NumPy core (``iaisreg.iais`` on ``numpy.float64``);
* gradient: PyTorch float64 autograd through ``tests/reference_loop.py``, an
  independent per-sample-loop implementation (slices each sample's blocks),
  not the vectorised core. On the NumPy backend, which has no autodiff, the
  test checks that reference gradient against central finite differences of
  the NumPy loss along random directions.

``IAISREG_BACKENDS`` selects the backends (see ``tests/backends.py``).
"""
from __future__ import annotations

import dataclasses
import re
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iaisreg
from backends import load, requested, round_to
from iaisreg._validate import dtype_name

BACKENDS = requested()
COMPILED = [b for b in ("jax", "tf") if b in BACKENDS]


@pytest.fixture(scope="module", autouse=True)
def _jax_float64():
    """JAX computes in float32 unless ``jax_enable_x64`` is set; this module
    needs float64, so it is enabled here and restored afterwards."""
    if "jax" not in BACKENDS:
        yield
        return
    from backends import jax_x64

    with jax_x64():
        yield


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return load(request.param)


@pytest.fixture(scope="module", params=COMPILED)
def compiled_backend(request):
    return load(request.param)


# ------------------------------------------------------------------ tolerances
#: (rtol, atol) for the loss and the gradient, by input dtype; atol is scaled by
#: max(1, largest |reference value|) (loss terms can cancel to ~0). The float64
#: references see exactly the values the backend received, so only the
#: computation's rounding counts. 16-bit inputs are computed in float32 (the
#: loss is float32); their gradient comes back in the input dtype and carries
#: its rounding. Float32 gradients differ by up to ~20 ulp of the largest entry
#: (differences p - q and log p - log q cancel), hence 5e-6 there. Observed
#: error/bound ratios over 2,000+ cases stayed below 0.4. A float64 loss is the
#: same computation as the NumPy core's, so it must agree to 1e-12 (observed
#: absolute errors stayed below 4e-16 over 2,000 cases); the gradient is
#: compared with the independent per-sample loop, as are the two references
#: with each other (REFERENCES_TOL).
LOSS_TOL = {"float64": (1e-12, 1e-14), "float32": (1e-5, 1e-6), "float16": (1e-5, 1e-6), "bfloat16": (1e-5, 1e-6)}
GRAD_TOL = {"float64": (1e-9, 1e-12), "float32": (5e-5, 5e-6), "float16": (2e-3, 1e-3), "bfloat16": (1e-2, 5e-3)}
REFERENCES_TOL = (1e-9, 1e-12)


def assert_close(got: np.ndarray, want: np.ndarray, tol: tuple, what: str) -> None:
    rtol, atol = tol
    scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


# ------------------------------------------------------------------ cases
#: (B, H, N) with the input dtypes drawn for that shape (H = 1 also as (B, N, N)).
#: Dtype handling does not depend on the shape, so each shape gets two dtypes
#: rather than all four: JAX compiles every eager operation once per shape and
#: dtype, and that compile time dominates this file's runtime.
SHAPES = {
    (1, 1, 3): ("float64", "float32"),
    (2, 2, 5): ("float64", "float16"),
    (3, 1, 6): ("float32", "bfloat16"),
    (2, 3, 8): ("float64", "float32"),
}
#: JAX compiles every eager operation once per shape, dtype and option set
#: (~30 ms each here), so its eager test draws from two shapes that still
#: cover all four dtypes and the (B, N, N) input; its compiled test, the
#: other backends and the NumPy reference cover the other shapes.
EAGER_SHAPES = {"jax": {(2, 2, 5): ("float64", "float16"), (3, 1, 6): ("float32", "bfloat16")}}
FORMS = ("masks", "int_masks", "shared", "text_only", "n_text_int", "n_text_lengths")
OPTIONS = {name: option.choices for name, option in iaisreg.OPTIONS.items()}


@dataclasses.dataclass
class Case:
    attn: np.ndarray  # float64 holding the values of `dtype`
    dtype: str
    roles: np.ndarray  # (B, N): 0 text item, 1 image item, 2 neither
    n_text: Any  # None, an int or a (B,) integer array
    arrays: dict  # the other item arguments (NumPy arrays)
    options: dict
    weights: np.ndarray  # (B,) for reduction="none"

    @property
    def compute_dtype(self) -> str:
        return "float64" if self.dtype == "float64" else "float32"

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return (f"Case(shape={self.attn.shape}, dtype={self.dtype}, n_text={self.n_text!r}, "
                f"arrays={ {k: v.astype(int).tolist() for k, v in self.arrays.items()} }, "
                f"roles={self.roles.tolist()}, options={self.options})")


def _roles_from_split(k: np.ndarray, valid: np.ndarray) -> np.ndarray:
    pos = np.arange(valid.shape[1])[None, :]
    return np.where(valid, np.where(pos < np.reshape(k, (-1, 1)), 0, 1), 2)


@st.composite
def cases(draw, dtypes, shapes=SHAPES, forms=FORMS, options=OPTIONS) -> Case:
    b, h, n = shape = draw(st.sampled_from(sorted(shapes)))
    rank3 = h == 1 and draw(st.booleans())
    allowed = [d for d in shapes[shape] if d in dtypes] if isinstance(shapes, dict) else dtypes
    dtype = draw(st.sampled_from(allowed or ["float32"]))
    form = draw(st.sampled_from(forms))
    opts = {k: draw(st.sampled_from(v)) for k, v in options.items()}
    row = st.lists(st.sampled_from([0, 1, 2]), min_size=n, max_size=n)
    bools = st.lists(st.booleans(), min_size=n, max_size=n)
    n_text, arrays = None, {}
    if form in ("masks", "int_masks", "text_only"):
        roles = np.array(draw(st.lists(row, min_size=b, max_size=b)))
        if form == "masks":
            arrays = {"text_mask": roles == 0, "image_mask": roles == 1}
        elif form == "int_masks":
            it = draw(st.sampled_from(["int32", "int64", "uint8"]))
            arrays = {"text_mask": (roles == 0).astype(it), "image_mask": (roles == 1).astype(it)}
        else:
            arrays = {"text_mask": roles == 0, "attention_mask": roles != 2}
    elif form == "shared":
        one = np.array(draw(row))
        roles = np.broadcast_to(one, (b, n)).copy()
        arrays = {"text_mask": one == 0, "image_mask": one == 1}
    else:
        valid = np.array(draw(st.lists(bools, min_size=b, max_size=b)))
        if form == "n_text_int":
            n_text = draw(st.integers(0, n))
            roles = _roles_from_split(np.full(b, n_text), valid)
        else:
            it = draw(st.sampled_from(["int32", "int64"]))
            n_text = np.array(draw(st.lists(st.integers(0, n), min_size=b, max_size=b)), dtype=it)
            roles = _roles_from_split(n_text, valid)
        arrays = {"attention_mask": valid}
    seed = draw(st.integers(0, 2**32 - 1))
    half = dtype in ("float16", "bfloat16")
    # probabilities in 16 bits must not underflow to 0 inside a block (log 0 is clamped
    # at each dtype's own smallest normal, so the float64 reference would differ)
    scale = draw(st.sampled_from([0.1, 1.0] if (half and opts["inputs"] == "probs") else [0.1, 1.0, 5.0]))
    rng = np.random.default_rng(seed)
    s = rng.normal(scale=scale, size=(b, h, n, n))
    if opts["inputs"] == "probs":  # what output_attentions returns: padding masked additively
        valid = roles != 2
        s = np.where(valid[:, None, None, :], s, s - 1e4)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
    if rank3:
        s = s[:, 0]
    return Case(round_to(s, dtype), dtype, roles, n_text, arrays, opts, rng.normal(size=b))


# ------------------------------------------------------------------ references
def reference_loss(c: Case, *, reduction: str | None = None) -> np.ndarray:
    opts = {**c.options, "reduction": reduction or c.options["reduction"]}
    return np.asarray(iaisreg.iais(c.attn, c.n_text, **c.arrays, **opts))


def reference_scalar_and_grad(c: Case) -> tuple[float, np.ndarray]:
    """Float64 PyTorch autograd through the per-sample loop of
    ``tests/reference_loop.py`` (independent of the vectorised core)."""
    import torch

    from reference_loop import reference_iais

    text = [list(map(int, np.flatnonzero(r == 0))) for r in c.roles]
    image = [list(map(int, np.flatnonzero(r == 1))) for r in c.roles]
    x = torch.tensor(c.attn, dtype=torch.float64, requires_grad=True)
    o = c.options
    per = reference_iais(x, text, image, mode=o["mode"], anchor=o["anchor"], variant=o["variant"],
                         heads=o["heads"], inputs=o["inputs"], reduction="none", blocks="sliced")
    value = _reduce(per, torch.from_numpy(c.weights), o["reduction"])
    if not value.requires_grad:  # no sample has both modalities: constant 0
        return float(value), np.zeros_like(c.attn)
    (grad,) = torch.autograd.grad(value, x, allow_unused=True)
    return float(value.detach()), (np.zeros_like(c.attn) if grad is None else grad.numpy())


def _reduce(per: Any, w: Any, reduction: str) -> Any:
    if reduction == "none":
        return (per * w).sum()
    return per.sum() if reduction == "sum" else per.mean()


def scalar_fn(backend, c: Case):
    """``(x, w, arrays) -> scalar`` on ``backend``: the loss itself, or the
    weighted sum of the per-sample losses for ``reduction="none"``."""
    opts, n_text_int = c.options, (c.n_text if isinstance(c.n_text, int) else None)

    def fn(x: Any, w: Any, arrays: dict) -> Any:
        arrays = dict(arrays)
        n_text = arrays.pop("n_text", n_text_int)
        out = backend.iais(x, n_text, **arrays, **opts)
        if opts["reduction"] != "none":
            return out
        prod = out * w
        return prod.sum() if hasattr(prod, "sum") else backend.tf.reduce_sum(prod)

    return fn


def backend_inputs(backend, c: Case) -> tuple[Any, Any, dict]:
    arrays = dict(c.arrays)
    if isinstance(c.n_text, np.ndarray):
        arrays["n_text"] = c.n_text
    return (backend.asarray(c.attn, c.dtype), backend.asarray(c.weights, c.compute_dtype),
            backend.convert(arrays))


def check_against_reference(backend, c: Case, value: Any, grad: Any, *, what: str) -> None:
    want_value, want_grad = reference_scalar_and_grad(c)
    core_value = np.asarray(_reduce(reference_loss(c, reduction="none"), c.weights, c.options["reduction"]))
    # the two float64 references (the core on NumPy, the per-sample loop) agree
    assert_close(np.asarray(want_value), core_value, REFERENCES_TOL, "references")
    assert_close(np.asarray(backend.to_numpy(value)), core_value, LOSS_TOL[c.dtype], f"{what}: loss")
    assert grad is not None
    g = backend.to_numpy(grad)
    assert g.shape == c.attn.shape and dtype_name(grad.dtype) == c.dtype, (grad.dtype, c.dtype)
    assert_close(g, want_grad, GRAD_TOL[c.dtype], f"{what}: gradient")


# ------------------------------------------------------------------ eager, every backend
@given(data=st.data())
def test_iais_loss_and_grad_match_reference(backend, data):
    c = data.draw(cases(backend.dtypes, shapes=EAGER_SHAPES.get(backend.name, SHAPES)), label="case")
    x, w, arrays = backend_inputs(backend, c)
    out = backend.iais(x, arrays.pop("n_text", c.n_text), **arrays, **c.options)
    want = reference_loss(c)
    assert tuple(np.shape(backend.to_numpy(out))) == want.shape
    assert dtype_name(out.dtype) == c.compute_dtype, (out.dtype, c.compute_dtype)
    assert_close(backend.to_numpy(out), want, LOSS_TOL[c.dtype], "loss")
    if backend.name == "numpy":
        check_reference_gradient_by_finite_differences(c)
        return
    x, w, arrays = backend_inputs(backend, c)
    value, grad = backend.value_and_grad(scalar_fn(backend, c), x, w, arrays)
    check_against_reference(backend, c, value, grad, what=backend.name)


def check_reference_gradient_by_finite_differences(c: Case, directions: int = 2) -> None:
    """Central differences of the float64 NumPy loss along random directions
    against the reference gradient (for probabilities, relative directions
    keep them positive, and entries near 1 stay put so that none leaves
    [0, 1], which the loss checks)."""
    _, g = reference_scalar_and_grad(c)
    rng = np.random.default_rng(zlib.crc32(c.attn.tobytes()))  # stable across processes (unlike hash())
    x0 = c.attn
    for _ in range(directions):
        v = rng.normal(size=x0.shape)
        if c.options["inputs"] == "probs":
            v = np.where(x0 < 0.999, v * x0, 0.0)
        h = 1e-6

        def f(x: np.ndarray) -> float:
            return float(_reduce(np.asarray(iaisreg.iais(x, c.n_text, **c.arrays, **{**c.options, "reduction": "none"})),
                                 c.weights, c.options["reduction"]))

        fd = (f(x0 + h * v) - f(x0 - h * v)) / (2 * h)
        dot = float(np.sum(g * v))
        bound = 1e-6 * (float(np.sum(np.abs(g * v))) + abs(fd)) + 1e-9
        assert abs(fd - dot) <= bound, (fd, dot, bound)


# ------------------------------------------------------------------ exact zeros: empty samples, padding
@pytest.mark.parametrize("mode", OPTIONS["mode"])
@pytest.mark.parametrize("variant", OPTIONS["variant"])
def test_empty_samples_and_padding_get_exact_zeros(backend, mode, variant):
    """A sample with no text item or no image item has loss 0 and gradient 0,
    and padding rows and columns get gradient 0: exactly, not within a
    tolerance. The other gradients are finite and not all 0."""
    roles = np.array([[0, 1, 2, 0, 1, 1, 2],   # padding at 2 and 6
                      [2, 1, 1, 2, 1, 1, 1],   # no text item
                      [0, 0, 2, 0, 2, 2, 0]])  # no image item
    s = np.random.default_rng(4).normal(scale=2.0, size=(3, 2, 7, 7))
    masks = backend.convert({"text_mask": roles == 0, "image_mask": roles == 1})
    for heads in ("auto", "per_head"):  # auto: mean_probs (official) or per_head (paper)
        opts = dict(mode=mode, variant=variant, anchor="both", heads=heads)
        per = backend.to_numpy(backend.iais(backend.asarray(s, "float64"), **masks, reduction="none", **opts))
        assert per[1] == 0.0 and per[2] == 0.0 and per[0] != 0.0, (heads, per)
        _, grad = backend.value_and_grad(lambda x, m: backend.iais(x, **m, reduction="sum", **opts),
                                         backend.asarray(s, "float64"), masks)
        if grad is None:  # NumPy: no autodiff
            continue
        g = backend.to_numpy(grad)
        pad = roles[0] == 2
        assert np.all(g[1:] == 0.0) and np.all(g[0][:, pad, :] == 0.0) and np.all(g[0][:, :, pad] == 0.0), heads
        assert np.all(np.isfinite(g)) and np.any(g[0] != 0.0), heads


# ------------------------------------------------------------------ positions outside both item masks
#: per sample (B, N): 0 text item, 1 image item, 2 in neither mask ([CLS], [SEP], padding), 3 an item
#: of the text mask that attention_mask excludes, 4 the same for the image mask
EXCLUDED_ROLES = np.array([[2, 0, 0, 2, 3, 1, 1, 4],
                           [2, 0, 3, 2, 1, 4, 1, 2]])
#: what is written at every excluded position (its row and its column); none may change anything
POISONS = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf, "1e30": 1e30}
#: every mode and variant, both anchors, every heads and inputs value, each once
EXCLUDED_CONFIGS = [
    dict(mode="singular", variant="official", heads="auto", inputs="scores"),
    dict(mode="distributed", variant="official", heads="mean_probs", inputs="probs"),
    dict(mode="singular", variant="paper", heads="mean_scores", inputs="scores"),
    dict(mode="distributed", variant="paper", heads="per_head", inputs="probs"),
]


def _excluded_inputs(inputs: str) -> tuple[np.ndarray, dict, np.ndarray]:
    """Clean float64 scores (or probabilities), the item arguments, and the
    ``(B, N)`` positions that no block holds."""
    roles = EXCLUDED_ROLES
    s = np.random.default_rng(21).normal(scale=2.0, size=(2, 2, 8, 8))
    if inputs == "probs":
        s = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    arrays = {"text_mask": np.isin(roles, (0, 3)), "image_mask": np.isin(roles, (1, 4)),
              "attention_mask": roles <= 2}
    return s, arrays, ~np.isin(roles, (0, 1))


def _poisoned(s: np.ndarray, excluded: np.ndarray, value: float) -> np.ndarray:
    s = s.copy()
    for b in range(s.shape[0]):
        s[b][:, excluded[b], :] = value
        s[b][:, :, excluded[b]] = value
    return s


def _value_and_grad_runs(backend, key: Any, fn):
    """Eager, and compiled where the suite compiles (jax.jit, tf.function, torch.compile)."""
    runs = [("eager", lambda x, *a: backend.value_and_grad(fn, x, *a))]
    if backend.name in COMPILED or backend.name == "torch":
        runs.append(("compiled", backend.compiled_value_and_grad(("excluded",) + key, fn)))
    return runs


@pytest.mark.parametrize("config", range(len(EXCLUDED_CONFIGS)))
def test_excluded_positions_change_nothing(backend, config):
    """NaN, +inf, -inf or 1e30 at positions outside both item masks (or that
    attention_mask excludes) leave the loss and its gradient exactly as they
    are on clean input; the gradient is finite, and 0 at those positions."""
    opts = dict(EXCLUDED_CONFIGS[config], anchor="both", reduction="sum")
    clean, arrays, excluded = _excluded_inputs(opts["inputs"])
    masks = backend.convert(arrays)
    fn = lambda x, m: backend.iais(x, **m, **opts)  # noqa: E731
    for how, run in _value_and_grad_runs(backend, (config,), fn):
        want, want_grad = run(backend.asarray(clean, "float64"), masks)
        want = backend.to_numpy(want)
        assert np.isfinite(want) and want != 0.0, (how, want)
        for name, poison in POISONS.items():
            value, grad = run(backend.asarray(_poisoned(clean, excluded, poison), "float64"), masks)
            what = f"{how}, {name} at excluded positions"
            np.testing.assert_array_equal(backend.to_numpy(value), want, err_msg=what)
            if grad is None:  # NumPy: no autodiff
                continue
            g = backend.to_numpy(grad)
            assert np.all(np.isfinite(g)), what
            np.testing.assert_array_equal(g, backend.to_numpy(want_grad), err_msg=what)
            for b in range(g.shape[0]):
                assert np.all(g[b][:, excluded[b], :] == 0.0) and np.all(g[b][:, :, excluded[b]] == 0.0), what


#: every mode and variant on scores (probabilities are logged with a floor: no -inf there)
UNIFORM_CONFIGS = [
    dict(mode="singular", variant="official", heads="auto"),
    dict(mode="distributed", variant="official", heads="auto"),
    dict(mode="singular", variant="paper", heads="auto"),
    dict(mode="distributed", variant="paper", heads="mean_scores"),
]


@pytest.mark.parametrize("config", range(len(UNIFORM_CONFIGS)))
def test_a_block_row_of_minus_inf_is_uniform(backend, config):
    """A row whose scores over a block are all -inf (a text item's S_LL row,
    an image item's S_VL row) is uniform over that block: the loss is the one
    with equal finite scores there, finite and the same on every backend; the
    gradient is finite, that input's gradient with 0 at the -inf entries."""
    opts = dict(UNIFORM_CONFIGS[config], anchor="both", reduction="sum")
    s, arrays, _ = _excluded_inputs("scores")
    t, v = arrays["text_mask"] & arrays["attention_mask"], arrays["image_mask"] & arrays["attention_mask"]
    dead = np.zeros(s.shape, bool)
    dead[0, :, 1] = t[0]  # text item 1 of sample 0: its S_LL row
    dead[1, :, 5] = t[1]  # image item 5 of sample 1: its S_VL row
    equal = np.where(dead, 0.5, s)
    want = np.asarray(iaisreg.iais(equal, **arrays, **opts))
    masks = backend.convert(arrays)
    fn = lambda x, m: backend.iais(x, **m, **opts)  # noqa: E731
    for how, run in _value_and_grad_runs(backend, (config, "uniform"), fn):
        value, grad = run(backend.asarray(np.where(dead, -np.inf, s), "float64"), masks)
        assert_close(backend.to_numpy(value), want, LOSS_TOL["float64"], f"{how}: loss")
        if grad is None:
            continue
        _, want_grad = run(backend.asarray(equal, "float64"), masks)
        g = backend.to_numpy(grad)
        assert np.all(np.isfinite(g)), how
        assert_close(g, np.where(dead, 0.0, backend.to_numpy(want_grad)), GRAD_TOL["float64"], f"{how}: gradient")


# ------------------------------------------------------------------ 16-bit probabilities
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_probabilities_get_the_float32_gradient_rounded_once(backend, dtype):
    """16-bit probabilities are computed in float32, backward included: the
    gradient is the float32 gradient of the same values, rounded once to the
    input's dtype. With respect to a probability it is about ``|g| / r``, ``r``
    the share of the row's attention its block holds, so float16 (max 65504)
    overflows to inf when a block gets almost none of a row's attention: here
    with scores of scale 20 (docs/semantics.md). bfloat16 has the range."""
    if backend.name == "numpy" or dtype not in backend.dtypes:
        pytest.skip("no autodiff" if backend.name == "numpy" else f"no {dtype} on {backend.name}")
    fn = lambda x: backend.iais(x, 4, mode="distributed", anchor="both", inputs="probs")  # noqa: E731
    for scale in (1.0, 20.0):
        s = np.random.default_rng(5).normal(scale=scale, size=(2, 2, 8, 8))
        e = np.exp(s - s.max(-1, keepdims=True))
        p = round_to(e / e.sum(-1, keepdims=True), dtype)
        v16, g16 = backend.value_and_grad(fn, backend.asarray(p, dtype))
        v32, g32 = backend.value_and_grad(fn, backend.asarray(p, "float32"))
        np.testing.assert_array_equal(backend.to_numpy(v16), backend.to_numpy(v32))
        with np.errstate(over="ignore"):
            want = round_to(backend.to_numpy(g32), dtype)
        np.testing.assert_array_equal(backend.to_numpy(g16), want)
        overflow = dtype == "float16" and scale == 20.0
        assert np.all(np.isfinite(backend.to_numpy(g16))) != overflow, (dtype, scale)


# ------------------------------------------------------------------ compiled: jax.jit, tf.function
#: option combinations for the compiled tests: every value of every option
#: appears, and every (mode, anchor, variant) triple; each compiles once per shape/dtype.
COMPILED_OPTIONS = [
    dict(mode=m, anchor=a, variant=v, heads=h, reduction=r, inputs=i)
    for (m, a, v), h, r, i in zip(
        [(m, a, v) for m in OPTIONS["mode"] for a in OPTIONS["anchor"] for v in OPTIONS["variant"]],
        ["auto", "mean_probs", "per_head", "mean_scores"] * 3,
        ["none", "mean", "sum"] * 4,
        ["scores", "scores", "probs"] * 4,
    )
]
COMPILED_SHAPES = ((3, 2, 7),)
#: traced item arguments: boolean masks, (B,) lengths with an attention mask, a text mask alone
COMPILED_FORMS = ("masks", "n_text_lengths", "text_only")


@st.composite
def compiled_cases(draw, dtypes):
    i = draw(st.integers(0, len(COMPILED_OPTIONS) - 1))
    opts = COMPILED_OPTIONS[i]
    form = COMPILED_FORMS[i % len(COMPILED_FORMS)]  # tied to the options: one trace per (options, dtype)
    return draw(cases(dtypes, shapes=COMPILED_SHAPES, forms=[form], options={k: [v] for k, v in opts.items()}))


@given(data=st.data())
def test_compiled_loss_and_grad_match_reference(compiled_backend, data):
    backend = compiled_backend
    c = data.draw(compiled_cases(("float64", "float32")), label="case")
    x, w, arrays = backend_inputs(backend, c)
    key = (tuple(sorted(c.options.items())), tuple(sorted(arrays)), c.n_text if isinstance(c.n_text, int) else None)
    fn = backend.compiled_value_and_grad(key, scalar_fn(backend, c))
    value, grad = fn(x, w, arrays)
    check_against_reference(backend, c, value, grad, what=f"compiled {backend.name}")


# ------------------------------------------------------------------ torch.compile (a few fixed configurations)
TORCH_COMPILE_CONFIGS = [
    dict(mode="singular", anchor="both", variant="official", heads="auto", reduction="mean", inputs="scores"),
    dict(mode="distributed", anchor="V", variant="paper", heads="per_head", reduction="none", inputs="scores"),
]


@pytest.mark.skipif("torch" not in BACKENDS, reason="torch not in IAISREG_BACKENDS")
@pytest.mark.parametrize("config", range(len(TORCH_COMPILE_CONFIGS)))
@settings(max_examples=15)
@given(data=st.data())
def test_torch_compile_matches_reference(config, data):
    """``torch.compile(fullgraph=True, dynamic=False)``, compiled once per
    configuration (fixed shape and dtype; masks vary as tensors)."""
    backend = load("torch")
    opts = TORCH_COMPILE_CONFIGS[config]
    dtype = ("float64", "float32")[config]
    c = data.draw(cases((dtype,), shapes=((2, 2, 6),), forms=["masks"], options={k: [v] for k, v in opts.items()}),
                  label="case")
    x, w, arrays = backend_inputs(backend, c)
    fn = backend.compiled_value_and_grad(("torch.compile", config), scalar_fn(backend, c))
    value, grad = fn(x, w, arrays)
    check_against_reference(backend, c, value, grad, what="torch.compile")


# ------------------------------------------------------------------ helpers: masks_from_lengths, m_kl
@given(st.integers(1, 3), st.integers(0, 8), st.data())
def test_masks_from_lengths_matches_numpy(backend, b, n, data):
    lens = st.lists(st.integers(0, 4), min_size=b, max_size=b)
    it = data.draw(st.sampled_from(["int32", "int64"]))
    tl = np.array(data.draw(lens), dtype=it)
    il = np.array(data.draw(lens), dtype=it)
    kw = {}
    if data.draw(st.booleans()):
        kw["text_start"] = data.draw(st.integers(0, 2))
    if data.draw(st.booleans()):
        kw["image_start"] = np.array(data.draw(lens), dtype=data.draw(st.sampled_from(["int32", "int64"])))
    # the masks, or (spans past n) the same error as NumPy's
    want = _outcome(load("numpy"), lambda b: iaisreg.masks_from_lengths(n, tl, il, **kw))
    got = _outcome(backend, lambda b: b.module.masks_from_lengths(n, b.asarray(tl, it), b.asarray(il, it),
                                                                  **b.convert(kw)))
    assert_same_outcome(got, want, rtol=0, atol=0)


@given(st.sampled_from([(1, 1), (2, 3), (3, 5)]), st.integers(0, 2**32 - 1), st.sampled_from(["float64", "float32"]))
def test_m_kl_matches_numpy(backend, shape, seed, dtype):
    b, n = shape
    rng = np.random.default_rng(seed)
    a = round_to(rng.dirichlet(np.ones(n), size=(b, n)), dtype)
    c = round_to(rng.dirichlet(np.ones(n), size=(b, n)), dtype)
    mask = rng.random((b, n, n)) < 0.8
    want = np.asarray(iaisreg.m_kl(a, c, mask=mask))
    got = backend.module.m_kl(backend.asarray(a, dtype), backend.asarray(c, dtype), mask=backend.asarray(mask, "bool"))
    assert_close(backend.to_numpy(got), want, LOSS_TOL[dtype], "m_kl")


@given(st.integers(0, 2**32 - 1), st.sampled_from(["mean_probs", "per_head", "mean_scores"]),
       st.sampled_from(["float64", "float32"]))
def test_isda_matches_numpy(backend, seed, heads, dtype):
    rng = np.random.default_rng(seed)
    b, h, n, k = 2, 2, 8, 3
    roles = np.stack([rng.permutation([0, 0, 0, 1, 1, 1, 2, 2]) for _ in range(b)])
    groups_t = rng.random((b, k, n)) < 0.5
    groups_v = rng.random((b, k, n)) < 0.5
    s = round_to(rng.normal(size=(b, h, n, n)), dtype)
    kw = dict(text_mask=roles == 0, image_mask=roles == 1, heads=heads)
    want = np.asarray(iaisreg.isda(s, groups_t, groups_v, **kw))
    got = backend.module.isda(backend.asarray(s, dtype), backend.asarray(groups_t, "bool"),
                              backend.asarray(groups_v, "bool"), **backend.convert(kw))
    assert_close(backend.to_numpy(got), want, LOSS_TOL[dtype], "isda")
    # the same groups as lists of positions (per sample, per object), and one sample's lists for every sample
    lists_t, lists_v = ([[np.flatnonzero(obj).tolist() for obj in sample] for sample in g] for g in (groups_t, groups_v))
    got = backend.module.isda(backend.asarray(s, dtype), lists_t, lists_v, **backend.convert(kw))
    assert_close(backend.to_numpy(got), want, LOSS_TOL[dtype], "isda, list groups")
    want = np.asarray(iaisreg.isda(s, lists_t[0], lists_v[0], **kw))
    got = backend.module.isda(backend.asarray(s, dtype), lists_t[0], lists_v[0], **backend.convert(kw))
    assert_close(backend.to_numpy(got), want, LOSS_TOL[dtype], "isda, shared list groups")


# ------------------------------------------------------------------ schedules
@pytest.mark.parametrize("name", ["exp", "linear", "log", "constant"])
def test_schedules_on_backend_steps(backend, name):
    f = iaisreg.get_schedule(name, 100, gamma=5.0, value=0.25)
    for step in (0, 30, 100, 250):
        want = f(step)
        got = f(backend.asarray(np.asarray(step), "int32"))
        np.testing.assert_allclose(float(backend.to_numpy(got)), want, rtol=1e-6)


# ------------------------------------------------------------------ bad input: same exception, same message
S = np.zeros((2, 3, 5, 5))

#: bad input to iais: (id, attn, n_text, keyword arguments, exception the
#: NumPy core raises, a pattern its message matches); every backend must raise
#: exactly the same (test_bad_input_same_error_everywhere)
BAD = [
    ("rank", np.zeros((5, 5)), 2, {}, ValueError, r"'attn' must have shape \(B, H, N, N\).*\(5, 5\)"),
    ("rank5", np.zeros((1, 2, 3, 5, 5)), 2, {}, ValueError, r"'attn' must have shape .*\(1, 2, 3, 5, 5\) \(rank 5\)"),
    ("non_square", np.zeros((2, 3, 5, 4)), 2, {}, ValueError, r"'attn' must be square.*\(2, 3, 5, 4\)"),
    ("int_dtype", np.zeros((2, 3, 5, 5), dtype=np.int64), 2, {}, TypeError, r"'attn' must have a real floating dtype"),
    ("int32_dtype", np.zeros((2, 3, 5, 5), dtype=np.int32), 2, {}, TypeError, r"real floating dtype; got int32"),
    ("bool_dtype", np.zeros((2, 3, 5, 5), dtype=bool), 2, {}, TypeError, r"real floating dtype; got bool"),
    ("n_text_high", S, 6, {}, ValueError, r"'n_text' must be in \[0, 5\]; got 6"),
    ("n_text_negative", S, -1, {}, ValueError, r"'n_text' must be in \[0, 5\]; got -1"),
    ("n_text_float", S, 2.0, {}, TypeError, r"'n_text' must be an int.*2.0"),
    ("n_text_bool", S, True, {}, TypeError, r"'n_text' must be an int"),
    ("n_text_str", S, "2", {}, TypeError, r"'n_text' must be an int.*got str '2'"),
    ("n_text_list", S, [1, 2], {}, TypeError, r"'n_text' must be an int.*got list \[1, 2\]"),
    ("n_text_shape", S, np.array([1, 2, 3]), {}, ValueError, r"'n_text'.*shape \(2,\); got shape \(3,\)"),
    ("n_text_float_array", S, np.array([1.0, 2.0]), {}, TypeError, r"'n_text' must have an integer dtype"),
    ("n_text_values", S, np.array([1, 7]), {}, ValueError, r"'n_text' must hold lengths in \[0, 5\]"),
    ("n_text_values_int32", S, np.array([-1, 2], dtype=np.int32), {}, ValueError,
     r"'n_text' must hold lengths in \[0, 5\]; got \[-1, 2\]"),
    ("no_items", S, None, {}, ValueError, r"give 'n_text'"),
    ("n_text_and_mask", S, 2, dict(text_mask=np.ones(5, bool)), ValueError, r"either 'n_text' or"),
    ("mask_shape", S, None, dict(text_mask=np.ones((2, 4), bool)), ValueError,
     r"'text_mask' must have shape \(2, 5\) or \(5,\); got \(2, 4\)"),
    ("mask_rank", S, None, dict(text_mask=np.ones((2, 5, 1), bool)), ValueError, r"'text_mask' must have shape .*\(2, 5, 1\)"),
    ("mask_float", S, None, dict(text_mask=np.ones((2, 5))), TypeError,
     r"'text_mask' must be a boolean or 0/1 integer mask; got dtype float64"),
    ("mask_float32", S, None, dict(image_mask=np.ones(5, np.float32)), TypeError, r"'image_mask' must be a boolean.*float32"),
    ("masks_overlap", S, None, dict(text_mask=np.ones(5, bool), image_mask=np.ones(5, bool)), ValueError,
     r"'text_mask' and 'image_mask' overlap"),
    ("masks_overlap_2d", S, None, dict(text_mask=np.eye(2, 5, dtype=bool), image_mask=np.eye(2, 5, dtype=bool)),
     ValueError, r"overlap.*include \[\[0, 0\], \[1, 1\]\]"),
    ("attention_mask_shape", S, 2, dict(attention_mask=np.ones((3, 5), bool)), ValueError, r"'attention_mask' must have shape"),
    ("attention_mask_float", S, 2, dict(attention_mask=np.ones((2, 5), np.float32)), TypeError,
     r"'attention_mask' must be a boolean"),
    ("mode", S, 2, dict(mode="mean"), ValueError, r"'mode' must be one of 'singular', 'distributed'; got 'mean'"),
    ("anchor", S, 2, dict(anchor="T"), ValueError, r"'anchor' must be one of 'V', 'L', 'both'; got 'T'"),
    ("variant", S, 2, dict(variant="x"), ValueError, r"'variant' must be one of"),
    ("heads", S, 2, dict(heads="max"), ValueError, r"'heads' must be one of"),
    ("reduction", S, 2, dict(reduction="avg"), ValueError, r"'reduction' must be one of 'mean', 'sum', 'none'; got 'avg'"),
    ("inputs", S, 2, dict(inputs="logits"), ValueError, r"'inputs' must be one of"),
    ("mode_not_str", S, 2, dict(mode=None), ValueError, r"'mode' must be one of .*; got None"),
    # empty sizes: an error, not NaN or a framework's own error
    ("batch_0", np.zeros((0, 3, 5, 5)), 2, {}, ValueError,
     r"'attn' must have at least one sample, head and position \(B, H, N >= 1\); got shape \(0, 3, 5, 5\)"),
    ("batch_0_rank3", np.zeros((0, 5, 5)), None, dict(text_mask=np.ones(5, bool)), ValueError,
     r"at least one sample.*\(0, 5, 5\)"),
    ("heads_0", np.zeros((2, 0, 5, 5)), 2, {}, ValueError, r"at least one sample, head and position.*\(2, 0, 5, 5\)"),
    ("positions_0", np.zeros((2, 3, 0, 0)), 0, {}, ValueError, r"at least one sample.*\(2, 3, 0, 0\)"),
    # Python lists are not arrays (NumPy arrays are converted: see MISTAKES)
    ("mask_list", S, None, dict(text_mask=[True, False, True, False, False]), TypeError,
     r"iais: argument 'text_mask' must be an array \(NumPy or the scores' library\); got list"),
    ("attention_mask_list", S, 2, dict(attention_mask=[[1] * 5] * 2), TypeError,
     r"argument 'attention_mask' must be an array .*; got list"),
    # values, checked where they are on the host
    ("probs_above_one", np.full((2, 3, 5, 5), 2.0), 2, dict(inputs="probs"), ValueError,
     r"'attn' must hold probabilities in \[0, 1\] with inputs='probs'; got values from 2 to 2 at item positions"),
    ("probs_negative", np.full((2, 3, 5, 5), -0.25), 2, dict(inputs="probs"), ValueError,
     r"got values from -0.25 to -0.25 at item positions"),
    ("probs_nan", np.where(np.eye(5, dtype=bool), np.nan, 0.2) + np.zeros((2, 3, 5, 5)), 2, dict(inputs="probs"),
     ValueError, r"got values from 0.2 to 0.2 and NaN at item positions"),
]
BAD_IDS = [b[0] for b in BAD]
#: the BAD cases found by reading values (skipped inside tf.function; iais_jit makes them before tracing)
VALUE_CHECKS = ("n_text_values", "n_text_values_int32", "masks_overlap", "masks_overlap_2d", "probs_above_one",
                "probs_negative", "probs_nan")


@pytest.mark.parametrize("case_id,attn,n_text,kwargs,exc,match", BAD, ids=BAD_IDS)
def test_bad_input_message(case_id, attn, n_text, kwargs, exc, match):
    """What the NumPy core raises: the exception type, and a message that
    names the argument, what was expected and what was received."""
    with pytest.raises(exc, match=match):
        iaisreg.iais(attn, n_text, **kwargs)


def _error(fn):
    try:
        fn()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return None, "no exception raised"


def _convert_bad(backend, attn, n_text, kwargs):
    x = backend.asarray(attn, str(attn.dtype))
    nt = backend.asarray(n_text, str(n_text.dtype)) if isinstance(n_text, np.ndarray) else n_text
    return x, nt, backend.convert(kwargs)


@pytest.mark.parametrize("case_id,attn,n_text,kwargs", [b[:4] for b in BAD], ids=BAD_IDS)
def test_bad_input_same_error_everywhere(backend, case_id, attn, n_text, kwargs):
    """The adapter (``iaisreg.<backend>.iais``) and the core on the backend's
    arrays raise exactly what the NumPy core raises: same type, same message."""
    want = _error(lambda: iaisreg.iais(attn, n_text, **kwargs))
    assert want[0] in (TypeError, ValueError), want
    x, nt, kw = _convert_bad(backend, attn, n_text, kwargs)
    assert _error(lambda: backend.module.iais(x, nt, **kw)) == want
    assert _error(lambda: iaisreg.iais(x, nt, **kw)) == want


@pytest.mark.parametrize("case_id,attn,n_text,kwargs", [b[:4] for b in BAD], ids=BAD_IDS)
def test_bad_input_same_error_when_compiled(case_id, attn, n_text, kwargs):
    """``iaisreg.jax.iais_jit`` and ``tf.function`` raise the same errors
    (value checks — ``n_text`` range, overlapping masks — need host values:
    ``iais_jit`` makes them before tracing, ``tf.function`` cannot)."""
    want = _error(lambda: iaisreg.iais(attn, n_text, **kwargs))
    value_check = case_id in VALUE_CHECKS
    if "jax" in BACKENDS:
        b = load("jax")
        x, nt, kw = _convert_bad(b, attn, n_text, kwargs)
        assert _error(lambda: b.module.iais_jit(x, nt, **kw)) == want
    if "tf" in BACKENDS:
        b = load("tf")
        x, nt, kw = _convert_bad(b, attn, n_text, kwargs)
        for autograph in (False, True):
            if isinstance(nt, (int, float, str, list, type(None))):
                fn = b.tf.function(lambda x, kw: b.module.iais(x, nt, **kw), autograph=autograph)
                got = _error(lambda: fn(x, kw))
            else:
                fn = b.tf.function(lambda x, nt, kw: b.module.iais(x, nt, **kw), autograph=autograph)
                got = _error(lambda: fn(x, nt, kw))
            if value_check:
                assert got == (None, "no exception raised")
            elif autograph:
                # AutoGraph re-raises the same type with the user-code traceback prepended
                assert got[0] is want[0] and got[1].rstrip().endswith(want[1]), got
            else:
                assert got == want


# ------------------------------------------------------------------ the same mistake, the same answer
X5 = np.random.default_rng(7).dirichlet(np.ones(5), size=(2, 3, 5)).astype(np.float32)  # (2, 3, 5, 5), rows sum to 1
R5 = np.array([[0, 0, 1, 1, 2], [0, 1, 1, 2, 2]])  # 0 text, 1 image, 2 padding
UNIFORM = np.full((2, 3, 3), 1 / 3, np.float32)


def _iais(b, *args, attn=X5, **kwargs):
    return b.module.iais(b.asarray(attn), *args, **kwargs)


def _iais_loss(b, **kwargs):
    """The backend's ``IAISLoss``; NumPy has none, so there the reference is
    the core's schedule resolution, which every ``IAISLoss`` uses."""
    if b.name == "numpy":
        from iaisreg.schedules import as_schedule

        return as_schedule(kwargs.get("schedule"), kwargs.get("total_steps"), func="IAISLoss")
    return b.module.IAISLoss(**kwargs)


def _with_padding_outside(value):
    x = X5.copy()
    x[0, :, 4, :] = x[0, :, :, 4] = value  # position 4 of sample 0 is padding (role 2): ignored
    return x


#: the same mistake on every backend: (id, the call on a backend, the exception
#: type and a message pattern the NumPy core gives, or None where the call is
#: accepted and every backend must return NumPy's value)
MISTAKES = [
    # NumPy masks, lengths and groups with a framework's scores are converted, as every framework does
    ("numpy_masks", lambda b: _iais(b, text_mask=R5 == 0, image_mask=R5 == 1), None, None),
    ("numpy_int_masks", lambda b: _iais(b, text_mask=(R5 == 0).astype(np.int64), attention_mask=R5 != 2), None, None),
    ("numpy_lengths", lambda b: _iais(b, np.array([2, 3]), attention_mask=b.asarray(R5 != 2)), None, None),
    ("numpy_int64_n_text", lambda b: _iais(b, np.int64(3)), None, None),
    ("numpy_m_kl_mask", lambda b: b.module.m_kl(b.asarray(UNIFORM), b.asarray(UNIFORM), mask=np.eye(3, dtype=bool)),
     None, None),
    ("numpy_isda_groups", lambda b: b.module.isda(b.asarray(X5), np.eye(2, 5, dtype=bool), np.eye(2, 5, 3, dtype=bool),
                                                  2), None, None),
    ("numpy_lengths_for_masks", lambda b: b.module.masks_from_lengths(5, np.array([1, 2]), b.asarray(np.array([2, 1]))),
     None, None),
    ("list_m_kl_mask", lambda b: b.module.m_kl(b.asarray(UNIFORM), b.asarray(UNIFORM), mask=[[True] * 3] * 3),
     TypeError, r"m_kl: argument 'mask' must be an array \(NumPy or the scores' library\); got list"),
    # empty matrices in m_kl: a defined value (sums over nothing)
    ("m_kl_no_matrices", lambda b: b.module.m_kl(*(b.asarray(np.zeros((0, 3, 3), np.float32)),) * 2), None, None),
    ("m_kl_no_rows", lambda b: b.module.m_kl(*(b.asarray(np.zeros((2, 0, 3), np.float32)),) * 2), None, None),
    # values, checked where they are on the host
    ("m_kl_not_distributions", lambda b: b.module.m_kl(b.asarray(4 * UNIFORM), b.asarray(UNIFORM)), ValueError,
     r"m_kl: argument 'a' must hold probability distributions in its rows \(values in \[0, 1\]\); got values "
     r"from 1.333 to 1.333"),
    ("m_kl_rows_not_summing_to_1", lambda b: b.module.m_kl(b.asarray(UNIFORM), b.asarray(UNIFORM / 2)), ValueError,
     r"m_kl: argument 'b' must hold probability distributions in its rows \(rows summing to 1\); got a row sum off "
     r"by 0.5"),
    ("m_kl_masked_rows_above_1", lambda b: b.module.m_kl(b.asarray(UNIFORM), b.asarray(UNIFORM * 1.2),
                                                         mask=b.asarray(np.ones((3, 3), bool))), ValueError,
     r"'b' must hold .*\(rows summing to 1 or less over the mask\); got a row sum off by 0.2"),
    ("probs_outside_items", lambda b: _iais(b, text_mask=R5 == 0, image_mask=R5 == 1, inputs="probs",
                                            attn=_with_padding_outside(7.0)), None, None),
    ("schedule_nan", lambda b: iaisreg.exp_schedule(10)(float("nan")), ValueError,
     r"exp_schedule: argument 'step' must not be NaN; got nan"),
    ("schedule_nan_array", lambda b: iaisreg.linear_schedule(10)(b.asarray(np.float32(np.nan))), ValueError,
     r"linear_schedule: argument 'step' must not be NaN; got nan"),
    ("lengths_past_n", lambda b: b.module.masks_from_lengths(4, b.asarray(np.array([3, 9])), b.asarray(np.array([1, 0]))),
     ValueError, r"masks_from_lengths: argument 'text_lengths' must end inside the 4 positions \(text_start \+ "
                 r"text_lengths <= 4\); got text_lengths \[3, 9\] with text_start 0"),
    ("image_past_n", lambda b: b.module.masks_from_lengths(4, b.asarray(np.array([1, 1])), b.asarray(np.array([3, 2])),
                                                           image_start=2), ValueError,
     r"argument 'image_lengths' must end inside the 4 positions \(image_start \+ image_lengths <= 4\); got "
     r"image_lengths \[3, 2\] with image_start 2"),
    ("lengths_negative", lambda b: b.module.masks_from_lengths(4, b.asarray(np.array([1, -1])), b.asarray(np.array([1, 1]))),
     ValueError, r"masks_from_lengths: argument 'text_lengths' must be >= 0; got \[1, -1\]"),
    ("start_negative", lambda b: b.module.masks_from_lengths(4, b.asarray(np.array([1, 1])), b.asarray(np.array([1, 1])),
                                                             text_start=-1), ValueError,
     r"masks_from_lengths: argument 'text_start' must be >= 0; got -1"),
    # IAISLoss(schedule=...): one message naming 'schedule'
    ("loss_schedule_int", lambda b: _iais_loss(b, schedule=5), TypeError,
     r"IAISLoss: argument 'schedule' must be None, a schedule name \('exp', 'linear', 'log', 'constant'\) or a "
     r"callable step -> weight; got int 5"),
    ("loss_schedule_name", lambda b: _iais_loss(b, schedule="cosine"), ValueError,
     r"IAISLoss: argument 'schedule' must be one of 'exp', 'linear', 'log', 'constant'; got 'cosine'"),
    ("loss_schedule_no_steps", lambda b: _iais_loss(b, schedule="exp"), ValueError,
     r"IAISLoss: schedule 'exp' needs 'total_steps'"),
]


def _outcome(backend, call):
    """``("value", NumPy arrays)`` or ``(exception type, message)``."""
    try:
        out = call(backend)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    parts = out if isinstance(out, tuple) else (out,)
    return "value", [backend.to_numpy(p) if hasattr(p, "shape") and not isinstance(p, np.ndarray) else np.asarray(p)
                     for p in parts]


def assert_same_outcome(got, want, *, rtol, atol):
    """The same exception and message, or values of the same shapes within the tolerance."""
    if want[0] != "value":
        assert got == want
        return
    assert got[0] == "value", got
    for g, w in zip(got[1], want[1], strict=True):
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol)


@pytest.mark.parametrize("case_id,call,exc,match", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_same_mistake_same_answer(backend, case_id, call, exc, match):
    """Every backend gives what the NumPy core gives: the same exception with
    the same message, or the same value."""
    want = _outcome(load("numpy"), call)
    if exc is None:
        assert want[0] == "value", want
    else:
        assert want[0] is exc and re.search(match, want[1]), want
    assert_same_outcome(_outcome(backend, call), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "numpy"])
def test_arrays_from_two_libraries(name):
    """A mask of another framework than the scores' is one clear error."""
    others = [o for o in BACKENDS if o not in ("numpy", name)]
    if not others:
        pytest.skip("needs two frameworks")
    b, other = load(name), load(others[0])
    with pytest.raises(TypeError, match=rf"iais: argument 'text_mask' is a \w+ array but the scores are \w+ arrays; "
                                        rf"pass arrays from one library \(NumPy arrays are converted\)"):
        b.module.iais(b.asarray(X5), text_mask=other.asarray(R5 == 0))


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "numpy"])
def test_adapters_reject_other_arrays(name):
    b = load(name)
    with pytest.raises(TypeError, match=r"iais: argument 'attn' must be a"):
        b.module.iais([[1.0]], 2)
    with pytest.raises(TypeError, match=r"m_kl: argument 'a' must be a"):
        b.module.m_kl("a", "b")


def test_backend_selection_env(monkeypatch):
    import backends

    monkeypatch.setenv(backends.ENV, "numpy, JAX,numpy")
    assert backends.requested() == ("numpy", "jax")
    monkeypatch.setenv(backends.ENV, "numpy,mxnet")
    with pytest.raises(ValueError, match="mxnet"):
        backends.requested()
    monkeypatch.setenv(backends.ENV, "")
    with pytest.raises(ValueError, match="names no backend"):
        backends.requested()


def test_failed_import_fails(monkeypatch):
    import backends

    class Broken(backends.Backend):
        name = "broken"

        def __init__(self) -> None:
            import iaisreg_no_such_framework  # noqa: F401

    monkeypatch.setitem(backends._CLASSES, "broken", Broken)
    with pytest.raises(pytest.fail.Exception, match="could not be loaded"):
        backends.load("broken")

