"""The backend-neutral core on NumPy: hand-computed cases, properties,
equivalence with the per-sample loop, and bad input."""
from __future__ import annotations

import inspect
import math
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import iaisreg
from backends import requested
from conftest import (ANCHORS, COMBOS, MODES, ROOT, VARIANTS, layouts_to_positions, option_defaults, random_layout,
                      signature_defaults)
from reference_loop import reference_iais

LN = math.log


# ---------------------------------------------------------------- hand-computed
def _two_by_two():
    """2 tokens (positions 0, 1) and 2 regions (2, 3), one head.

    S_LL = [[ln 4, 0], [0, 0]]  -> P_LL = [[.8, .2], [.5, .5]]
    S_VV = [[ln 3, 0], [0, 0]]  -> P_VV = [[.75, .25], [.5, .5]]
    S_VL = [[0, 1], [1, 0]]     -> region 0 -> token 1, region 1 -> token 0
    S_LV = 0                    -> P_LV uniform
    """
    s = np.zeros((1, 1, 4, 4))
    s[0, 0, 0, 0] = LN(4)
    s[0, 0, 2, 2] = LN(3)
    s[0, 0, 2, 1] = 1.0
    s[0, 0, 3, 0] = 1.0
    return s


def test_hand_singular_official_anchor_v():
    # idx = [1, 0]; M = [[P_LL[1,1], P_LL[1,0]], [P_LL[0,1], P_LL[0,0]]] = [[.5, .5], [.2, .8]]
    # Q = softmax(M): row 0 = [.5, .5]; row 1 = [1, e^.6] / (1 + e^.6)
    q1 = [1 / (1 + math.exp(0.6)), math.exp(0.6) / (1 + math.exp(0.6))]
    row0 = (0.5 - 0.75) * (LN(0.5) - LN(0.75)) + (0.5 - 0.25) * (LN(0.5) - LN(0.25))  # = ln(3) / 4
    row1 = sum((q - 0.5) * (LN(q) - LN(0.5)) for q in q1)
    expected = (row0 + row1) / 2  # batchmean: divided by the 2 anchor rows
    got = iaisreg.iais(_two_by_two(), 2, mode="singular", anchor="V")
    assert abs(row0 - LN(3) / 4) < 1e-12
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_hand_singular_paper_anchor_v():
    # idx from the scores S_VL = [1, 0]; M = S_LL[idx_i, idx_j] = [[0, 0], [0, ln 4]]
    # Q = [[.5, .5], [.2, .8]];  m-KL rows: ln(3)/4 and .3 ln 2.5 + .3 ln 1.6 = .3 ln 4
    expected = LN(3) / 4 + 0.3 * LN(4)
    got = iaisreg.iais(_two_by_two(), 2, mode="singular", anchor="V", variant="paper")
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_hand_distributed_official_anchor_v():
    # P_VL = [[a, b], [b, a]], a = 1/(1+e); P_LV uniform -> Q = P_VL @ P_LV = all .5
    eps = 1e-6
    p = [[0.75, 0.25], [0.5, 0.5]]
    t1 = sum(0.5 * (LN(0.5) - LN(pij + eps)) for row in p for pij in row)
    t2 = sum(pij * (LN(pij) - LN(0.5 + eps)) for row in p for pij in row)
    expected = (t1 + t2) / 2
    got = iaisreg.iais(_two_by_two(), 2, mode="distributed", anchor="V")
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_hand_anchor_l_singular_official():
    # anchor L: P_LV uniform -> argmax ties -> first region (position 2) for both tokens
    # M = P_VV[0, 0] everywhere = .75 -> Q uniform; P_LL = [[.8, .2], [.5, .5]]
    row0 = (0.5 - 0.8) * (LN(0.5) - LN(0.8)) + (0.5 - 0.2) * (LN(0.5) - LN(0.2))
    expected = row0 / 2
    got = iaisreg.iais(_two_by_two(), 2, mode="singular", anchor="L")
    assert float(got) == pytest.approx(expected, rel=1e-12)
    both = iaisreg.iais(_two_by_two(), 2, mode="singular", anchor="both")
    v = iaisreg.iais(_two_by_two(), 2, mode="singular", anchor="V")
    assert float(both) == pytest.approx(float(v) + expected, rel=1e-12)


def test_m_kl_hand():
    a = np.array([[0.5, 0.5], [0.9, 0.1]])
    b = np.array([[0.5, 0.5], [0.1, 0.9]])
    assert float(iaisreg.m_kl(a, b)) == pytest.approx(2 * 0.8 * LN(9), rel=1e-12)


# ---------------------------------------------------------------- equivalence with the loop
@pytest.mark.parametrize("mode,anchor,variant", COMBOS)
@pytest.mark.parametrize("heads", ["auto", "mean_probs", "per_head", "mean_scores"])
def test_matches_per_sample_loop(mode, anchor, variant, heads):
    rng = np.random.default_rng(zlib.crc32(f"{mode}-{anchor}-{variant}-{heads}".encode()))
    for trial in range(3):
        b, h, n = 4, 3, int(rng.integers(5, 14))
        roles = np.stack([random_layout(rng, n) for _ in range(b)])
        scores = rng.normal(scale=3.0, size=(b, h, n, n))
        text, image = layouts_to_positions(roles)
        got = iaisreg.iais(scores, text_mask=roles == 0, image_mask=roles == 1, mode=mode, anchor=anchor,
                           variant=variant, heads=heads, reduction="none")
        for blocks in ("authors", "sliced"):
            want = reference_iais(torch.from_numpy(scores), text, image, mode=mode, anchor=anchor, variant=variant,
                                  heads=heads, reduction="none", blocks=blocks).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_probs_input_matches_loop(mode, variant):
    rng = np.random.default_rng(7)
    b, h, n = 3, 2, 9
    roles = np.stack([random_layout(rng, n) for _ in range(b)])
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(b, h, n, n))), -1).numpy()
    text, image = layouts_to_positions(roles)
    got = iaisreg.iais(probs, text_mask=roles == 0, image_mask=roles == 1, mode=mode, variant=variant,
                       inputs="probs", reduction="none")
    want = reference_iais(torch.from_numpy(probs), text, image, mode=mode, variant=variant, inputs="probs",
                          reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ---------------------------------------------------------------- properties
finite = st.floats(-20, 20, allow_nan=False, width=64)


@st.composite
def case(draw, max_b=3, max_h=3, max_n=10):
    b = draw(st.integers(1, max_b))
    h = draw(st.integers(1, max_h))
    n = draw(st.integers(2, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    roles = np.stack([random_layout(rng, n) for _ in range(b)])
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    scores = rng.normal(scale=scale, size=(b, h, n, n))
    return scores, roles, rng


options = st.tuples(st.sampled_from(MODES), st.sampled_from(ANCHORS), st.sampled_from(VARIANTS))


@given(st.integers(1, 4), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_m_kl_properties(b, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.dirichlet(np.ones(n), size=(b, n))
    c = rng.dirichlet(np.ones(n), size=(b, n))
    d_ac = iaisreg.m_kl(a, c)
    np.testing.assert_allclose(d_ac, iaisreg.m_kl(c, a), rtol=1e-12)
    assert np.all(d_ac > 0)
    np.testing.assert_allclose(iaisreg.m_kl(a, a), 0.0, atol=1e-15)


@given(case(), options)
def test_loss_nonnegative_and_finite(c, opts):
    scores, roles, _ = c
    mode, anchor, variant = opts
    per = iaisreg.iais(scores, text_mask=roles == 0, image_mask=roles == 1, mode=mode, anchor=anchor,
                       variant=variant, reduction="none")
    assert per.shape == (scores.shape[0],)
    assert np.all(np.isfinite(per))
    # m-KL is >= 0; the authors' distributed form adds 1e-6 inside the logs, which can take it
    # below zero by about 2e-6 per anchor (e.g. P = Q = 1: -2 log(1 + 1e-6))
    floor = -4.5e-6 if (mode, variant) == ("distributed", "official") else -1e-12
    assert np.all(per >= floor), per


@given(case(), options, st.integers(1, 4))
def test_invariant_to_masked_padding(c, opts, n_pad):
    scores, roles, rng = c
    mode, anchor, variant = opts
    b, h, n, _ = scores.shape
    base = iaisreg.iais(scores, text_mask=roles == 0, image_mask=roles == 1, mode=mode, anchor=anchor,
                        variant=variant, reduction="none")
    # insert padding positions with arbitrary scores at random places
    m = n + n_pad
    keep = np.sort(rng.choice(m, size=n, replace=False))
    big = rng.normal(scale=50.0, size=(b, h, m, m))
    big[:, :, keep[:, None], keep[None, :]] = scores
    roles2 = np.full((b, m), 2)
    roles2[:, keep] = roles
    valid = roles2 != 2
    got = iaisreg.iais(big, text_mask=roles2 == 0, image_mask=roles2 == 1, attention_mask=valid, mode=mode,
                       anchor=anchor, variant=variant, reduction="none")
    np.testing.assert_allclose(got, base, rtol=1e-9, atol=1e-12)


@given(case(), options)
def test_invariant_to_consistent_permutation(c, opts):
    scores, roles, rng = c
    mode, anchor, variant = opts
    base = iaisreg.iais(scores, text_mask=roles == 0, image_mask=roles == 1, mode=mode, anchor=anchor,
                        variant=variant, reduction="none")
    n = scores.shape[-1]
    perm = rng.permutation(n)  # permutes regions (and tokens, and padding) consistently
    s2 = scores[:, :, perm][:, :, :, perm]
    r2 = roles[:, perm]
    got = iaisreg.iais(s2, text_mask=r2 == 0, image_mask=r2 == 1, mode=mode, anchor=anchor, variant=variant,
                       reduction="none")
    np.testing.assert_allclose(got, base, rtol=1e-9, atol=1e-12)


@given(case(max_b=4), options)
def test_invariant_to_batch_composition(c, opts):
    scores, roles, _ = c
    mode, anchor, variant = opts
    per = iaisreg.iais(scores, text_mask=roles == 0, image_mask=roles == 1, mode=mode, anchor=anchor,
                       variant=variant, reduction="none")
    for i in range(scores.shape[0]):
        one = iaisreg.iais(scores[i:i + 1], text_mask=roles[i:i + 1] == 0, image_mask=roles[i:i + 1] == 1,
                           mode=mode, anchor=anchor, variant=variant, reduction="none")
        np.testing.assert_allclose(one[0], per[i], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        iaisreg.iais(scores, text_mask=roles == 0, image_mask=roles == 1, mode=mode, anchor=anchor, variant=variant),
        per.mean(), rtol=1e-12)


@given(case(), options)
def test_scores_and_probabilities_agree(c, opts):
    scores, roles, _ = c
    mode, anchor, variant = opts
    valid = roles != 2
    # what output_attentions returns: softmax of the whole row with padding masked additively
    masked = np.where(valid[:, None, None, :], scores, scores - 10000.0)
    probs = np.exp(masked - masked.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    kw = dict(text_mask=roles == 0, image_mask=roles == 1, mode=mode, anchor=anchor, variant=variant, reduction="none")
    np.testing.assert_allclose(iaisreg.iais(probs, inputs="probs", **kw), iaisreg.iais(scores, **kw),
                               rtol=1e-7, atol=1e-10)


# ---------------------------------------------------------------- layouts and edge cases
def test_n_text_forms_agree():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 2, 8, 8))
    a = iaisreg.iais(s, 3, reduction="none")
    b = iaisreg.iais(s, np.array([3, 3, 3]), reduction="none")
    t = np.arange(8) < 3
    c = iaisreg.iais(s, text_mask=t, image_mask=~t, reduction="none")
    d = iaisreg.iais(s, text_mask=np.broadcast_to(t, (3, 8)).astype(np.int64), reduction="none")
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, c)
    np.testing.assert_allclose(a, d)


def test_masks_from_lengths_uniter_layouts():
    txt_lens = np.array([5, 3])  # with [CLS] and [SEP]
    nbb = np.array([2, 4])
    t, v = iaisreg.masks_from_lengths(10, txt_lens - 2, nbb, text_start=1, image_start=5)
    assert t.astype(int).tolist() == [[0, 1, 1, 1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]]
    assert v.astype(int).tolist() == [[0, 0, 0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]]
    t, v = iaisreg.masks_from_lengths(10, txt_lens - 2, nbb, text_start=1, image_start=txt_lens)
    assert v.astype(int).tolist() == [[0, 0, 0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]]


@pytest.mark.parametrize("mode,anchor,variant", COMBOS)
def test_empty_modality_gives_zero(mode, anchor, variant):
    rng = np.random.default_rng(1)
    s = rng.normal(size=(3, 2, 6, 6))
    t = np.array([[1, 1, 0, 0, 0, 0], [0] * 6, [1, 1, 1, 1, 1, 1]], dtype=bool)
    v = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0] * 6], dtype=bool)
    per = iaisreg.iais(s, text_mask=t, image_mask=v, mode=mode, anchor=anchor, variant=variant, reduction="none")
    assert per[1] == 0.0 and per[2] == 0.0 and per[0] > 0
    assert np.isfinite(iaisreg.iais(s, text_mask=t, image_mask=v, mode=mode, anchor=anchor, variant=variant))


@pytest.mark.parametrize("mode,anchor,variant", COMBOS)
def test_extreme_logits_finite(mode, anchor, variant):
    rng = np.random.default_rng(2)
    s = rng.choice([-1e4, 1e4], size=(2, 3, 7, 7)) + rng.normal(size=(2, 3, 7, 7))
    for dt in (np.float32, np.float64):
        per = iaisreg.iais(s.astype(dt), 3, mode=mode, anchor=anchor, variant=variant, reduction="none")
        assert np.all(np.isfinite(per)), per


def test_schedules():
    f = iaisreg.exp_schedule(100, gamma=5.0)
    assert f(0) == pytest.approx(math.exp(-5))
    assert f(50) == pytest.approx(math.exp(-2.5))
    assert f(100) == 1.0 and f(1000) == 1.0
    assert iaisreg.linear_schedule(10)(3) == pytest.approx(0.3)
    assert iaisreg.log_schedule(10, gamma=5.0)(10) == pytest.approx(1 - math.exp(-5))
    assert iaisreg.constant_schedule(0.25)(7) == 0.25
    arr = f(np.asarray(50))
    assert hasattr(arr, "dtype") and float(arr) == pytest.approx(math.exp(-2.5))
    g = iaisreg.get_schedule("exp", 100)
    assert g(30) == f(30)
    with pytest.raises(ValueError, match="total_steps"):
        iaisreg.exp_schedule(0)
    with pytest.raises(TypeError, match="total_steps"):
        iaisreg.exp_schedule(10.5)
    with pytest.raises(ValueError, match="gamma"):
        iaisreg.exp_schedule(10, gamma=-1)
    with pytest.raises(ValueError, match="name"):
        iaisreg.get_schedule("cosine", 10)
    with pytest.raises(ValueError, match="total_steps"):
        iaisreg.get_schedule("linear")


# ---------------------------------------------------------------- the options table
def test_options_table():
    table = iaisreg.OPTIONS
    assert list(table) == ["mode", "anchor", "variant", "heads", "reduction", "inputs"]
    for name, option in table.items():
        assert option.choices[0] == option.default and option.doc, name
    with pytest.raises(TypeError):
        table["mode"] = table["anchor"]  # read-only
    # iais shows every option with the table's default, keyword-only, before xp
    assert signature_defaults(iaisreg.iais, table) == option_defaults()
    params = inspect.signature(iaisreg.iais).parameters
    assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in table) and list(params)[-1] == "xp"
    # isda shares three of them: no "auto" heads, per-sample values by default
    assert signature_defaults(iaisreg.isda, ("heads", "inputs", "reduction")) == dict(
        heads="mean_probs", inputs="scores", reduction="none")
    with pytest.raises(ValueError, match=r"isda: argument 'heads' must be one of 'mean_probs', 'per_head', "
                                         r"'mean_scores'; got 'auto'"):
        iaisreg.isda(np.zeros((1, 4, 4)), [[0]], [[3]], 2, heads="auto")
    with pytest.raises(ValueError, match=r"isda: argument 'reduction' must be one of 'none', 'mean', 'sum'"):
        iaisreg.isda(np.zeros((1, 4, 4)), [[0]], [[3]], 2, reduction="avg")
    with pytest.raises(TypeError, match=r"iais\(\) got an unexpected keyword argument 'mdoe'"):
        iaisreg.iais(np.zeros((1, 4, 4)), 2, mdoe="singular")


# ---------------------------------------------------------------- bad input
# (the cases common to every backend, with their messages, are tests/test_backends.py's BAD)
def test_attn_must_be_an_array():
    with pytest.raises(TypeError, match=r"'attn' must be an array"):
        iaisreg.iais([[1.0]], 2)


def test_m_kl_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        iaisreg.m_kl(np.ones((2, 2)), np.ones((3, 3)))
    with pytest.raises(TypeError, match="real floating"):
        iaisreg.m_kl(np.ones((2, 2), dtype=int), np.ones((2, 2), dtype=int))


@pytest.mark.parametrize("module,backend,others", [
    ("iaisreg", None, ("torch", "jax", "tensorflow", "flax", "keras")),
    ("iaisreg.torch", "torch", ("jax", "tensorflow", "flax", "keras")),
    ("iaisreg.jax", "jax", ("torch", "tensorflow", "flax", "optax")),
    ("iaisreg.tf", "tf", ("torch", "flax")),
])
def test_import_imports_no_other_framework(module, backend, others):
    if backend is not None and backend not in requested():
        pytest.skip(f"{backend} not in IAISREG_BACKENDS")
    code = (f"import sys, {module}, iaisreg.schedules; iaisreg.iais; "
            f"bad = [m for m in {others!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- blocks cut to the items' ranges
@pytest.mark.parametrize("heads,inputs", [("auto", "scores"), ("mean_probs", "probs"), ("per_head", "scores"),
                                          ("mean_scores", "probs")])
@pytest.mark.parametrize("mode,anchor,variant", COMBOS)
def test_ranges_give_the_full_width_loss(monkeypatch, mode, anchor, variant, heads, inputs):
    """Host masks cut every block to the rows and columns of its modalities'
    ranges; the loss is that of the full-width blocks (device or traced masks)."""
    import iaisreg._loss as core

    rng = np.random.default_rng(11)
    b, h, max_tl, max_nbb = 3, 2, 7, 6
    n = max_tl + max_nbb + 1  # one padding position after the regions
    t, v = iaisreg.masks_from_lengths(n, np.array([5, 2, 1]), np.array([6, 2, 4]), text_start=1, image_start=max_tl)
    s = rng.normal(scale=2.0, size=(b, h, n, n))
    if inputs == "probs":
        s = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    kw = dict(text_mask=t, image_mask=v, mode=mode, anchor=anchor, variant=variant, heads=heads, inputs=inputs,
              reduction="none")
    ranges = core.item_ranges(iaisreg.Items(t, v), n)
    assert ranges == ((1, 6), (7, 13))
    cut = iaisreg.iais(s, **kw)
    monkeypatch.setattr(core, "item_ranges", lambda *a, **k: None)
    np.testing.assert_allclose(cut, iaisreg.iais(s, **kw), rtol=1e-12, atol=1e-15)


def test_ranges_from_an_int_split_and_empty_modalities():
    from iaisreg._blocks import item_ranges

    t = np.broadcast_to(np.arange(6) < 2, (2, 6))
    assert item_ranges(iaisreg.Items(t, ~t), 6) == ((0, 2), (2, 6))
    assert item_ranges(iaisreg.Items(t & False, ~t), 6) is None  # no text item at all: full width
    torch_t = torch.as_tensor(np.ascontiguousarray(t))
    assert item_ranges(iaisreg.Items(torch_t, ~torch_t), 6) == ((0, 2), (2, 6))  # eager CPU torch: read


@pytest.mark.parametrize("mode,anchor,variant", COMBOS)
def test_no_text_or_no_image_at_all(mode, anchor, variant):
    s = np.random.default_rng(12).normal(size=(2, 2, 5, 5))
    for k in (0, 5):  # every position image / every position text: loss 0
        per = iaisreg.iais(s, k, mode=mode, anchor=anchor, variant=variant, reduction="none")
        np.testing.assert_array_equal(per, 0.0)
    t = np.zeros((2, 5), bool)
    per = iaisreg.iais(s, text_mask=t, image_mask=~t, mode=mode, anchor=anchor, variant=variant, reduction="none")
    np.testing.assert_array_equal(per, 0.0)
