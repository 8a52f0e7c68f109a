"""ISDa in the core (paper Eq. 7-9): hand-computed values and properties."""
from __future__ import annotations

import math

import numpy as np
import pytest

import iaisreg
from iaisreg._isda import cps
from iaisreg._namespace import get_namespace

LN = math.log


def _scores():
    """Tokens 0, 1 and regions 2, 3; P_LL = [[.75, .25], [.5, .5]], P_VV = [[.5, .5], [.2, .8]]."""
    s = np.zeros((1, 1, 4, 4))
    s[0, 0, 0, 0] = LN(3)
    s[0, 0, 3, 3] = LN(4)
    return s


def test_hand_computed():
    # object A = token 0 + region 2, object B = token 1 + region 3: object level = the blocks themselves
    # m-KL rows: (.25 ln 1.5 + .25 ln 2) = ln(3)/4, and (.3 ln 2.5 + .3 ln 1.6) = .3 ln 4
    got = iaisreg.isda(_scores(), [[0], [1]], [[2], [3]], 2)
    assert float(got[0]) == pytest.approx(LN(3) / 4 + 0.3 * LN(4), rel=1e-12)


def test_cps_hand_computed():
    p = np.array([[[[0.1, 0.2, 0.3, 0.4],
                    [0.4, 0.3, 0.2, 0.1],
                    [0.25, 0.25, 0.25, 0.25],
                    [0.0, 0.0, 0.5, 0.5]]]])
    g = np.array([[[1, 1, 0, 0], [0, 0, 1, 1]]], dtype=bool)  # object 0 = rows/cols 0, 1; object 1 = 2, 3
    got = cps(p, g, g, get_namespace(p))[0, 0]
    # (0, 0): (.1 + .2 + .4 + .3) / 2 rows = .5; (0, 1): (.3 + .4 + .2 + .1) / 2 = .5
    # (1, 0): (.25 + .25 + 0 + 0) / 2 = .25;     (1, 1): (.25 + .25 + .5 + .5) / 2 = .75
    np.testing.assert_allclose(got, [[0.5, 0.5], [0.25, 0.75]])


def test_zero_for_identical_object_level_matrices():
    rng = np.random.default_rng(0)
    block = rng.normal(size=(3, 3))
    s = rng.normal(size=(1, 2, 6, 6))
    s[:, :, :3, :3] = block  # the same intra-modal scores in both modalities
    s[:, :, 3:, 3:] = block
    got = iaisreg.isda(s, [[0], [1], [2]], [[3], [4], [5]], 3)
    assert abs(float(got[0])) < 1e-12


def test_symmetric_in_the_modalities():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(2, 3, 7, 7))
    a = iaisreg.isda(s, [[0, 1], [2]], [[3], [4, 5, 6]], 3)
    # swap which positions are text and which are image, and the groups with them
    t = np.arange(7) >= 3
    b = iaisreg.isda(s, [[3], [4, 5, 6]], [[0, 1], [2]], text_mask=t, image_mask=~t)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert np.all(a > 0)


def test_objects_missing_in_a_modality_are_skipped():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(1, 2, 8, 8))
    base = iaisreg.isda(s, [[0], [1, 2]], [[4], [5, 6]], 4)
    # object 3 has tokens but no region, object 4 a region but no token: neither counts
    more = iaisreg.isda(s, [[0], [1, 2], [3], []], [[4], [5, 6], [], [7]], 4)
    np.testing.assert_allclose(more, base, rtol=1e-12)
    res = iaisreg.isda(s, [[0], [1, 2], [3], []], [[4], [5, 6], [], [7]], 4, return_matrices=True)
    assert res.objects.tolist() == [[True, True, False, False]]
    np.testing.assert_allclose(res.text[0, 0].sum(-1), [1, 1, 0, 0])
    # a sample with fewer than two objects present has ISDa 0
    assert float(iaisreg.isda(s, [[0]], [[4]], 4)[0]) == 0.0


def test_batch_equals_per_sample_and_masks_equal_lists():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(2, 2, 7, 7))
    tg = [[[0], [1, 2]], [[0, 1], [2]]]
    ig = [[[3, 4], [5]], [[6], [3]]]
    both = iaisreg.isda(s, tg, ig, 3)
    for i in range(2):
        one = iaisreg.isda(s[i:i + 1], tg[i], ig[i], 3)
        np.testing.assert_allclose(one[0], both[i], rtol=1e-12)
    tm = np.zeros((2, 2, 7), bool)
    im = np.zeros((2, 2, 7), bool)
    for b in range(2):
        for k in range(2):
            tm[b, k, tg[b][k]] = True
            im[b, k, ig[b][k]] = True
    np.testing.assert_allclose(iaisreg.isda(s, tm, im, 3), both, rtol=1e-12)
    assert float(iaisreg.isda(s, tg, ig, 3, reduction="mean")) == pytest.approx(float(both.mean()))


def test_probabilities_input_matches_scores():
    rng = np.random.default_rng(4)
    s = rng.normal(size=(1, 2, 6, 6))
    p = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    a = iaisreg.isda(s, [[0], [1, 2]], [[3], [4, 5]], 3)
    b = iaisreg.isda(p, [[0], [1, 2]], [[3], [4, 5]], 3, inputs="probs")
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_bad_input():
    s = np.zeros((1, 1, 5, 5))
    with pytest.raises(ValueError, match="same objects"):
        iaisreg.isda(s, [[0], [1]], [[3]], 3)
    with pytest.raises(ValueError, match="position 9 of object 0"):
        iaisreg.isda(s, [[9]], [[3]], 3)
    with pytest.raises(TypeError, match="'text_groups' must be"):
        iaisreg.isda(s, "abc", [[3]], 3)
    with pytest.raises(ValueError, match=r"'image_groups' must have shape \(1, K, 5\)"):
        iaisreg.isda(s, [[0]], np.ones((1, 1, 4), bool), 3)
    with pytest.raises(ValueError, match="'heads' must be one of"):
        iaisreg.isda(s, [[0]], [[3]], 3, heads="x")
