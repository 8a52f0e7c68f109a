"""The core on ``array-api-strict``, a namespace that has only what the array
API standard defines: the core needs nothing beyond it. Values are compared
with the NumPy core."""
from __future__ import annotations

import numpy as np
import pytest

import iaisreg
from conftest import ANCHORS, MODES, VARIANTS, scores_and_roles

xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed (it is in the 'dev' extra)")


def is_strict(x) -> bool:
    return type(x).__module__.startswith("array_api_strict")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_iais(mode, variant):
    s, roles = scores_and_roles()
    for anchor in ANCHORS:
        kw = dict(mode=mode, anchor=anchor, variant=variant, reduction="none")
        got = iaisreg.iais(xs.asarray(s), text_mask=xs.asarray(roles == 0), image_mask=xs.asarray(roles == 1), **kw)
        assert is_strict(got) and got.dtype == xs.float64
        want = iaisreg.iais(s, text_mask=roles == 0, image_mask=roles == 1, **kw)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    lengths = xs.asarray([2, 4, 3])
    np.testing.assert_allclose(np.asarray(iaisreg.iais(xs.asarray(s), lengths, mode=mode, variant=variant)),
                               iaisreg.iais(s, np.array([2, 4, 3]), mode=mode, variant=variant), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(iaisreg.iais(xs.asarray(s, dtype=xs.float32), 3, mode=mode)),
                               iaisreg.iais(s.astype(np.float32), 3, mode=mode), rtol=1e-6)


def test_isda_m_kl_masks_from_lengths():
    s, _ = scores_and_roles(1)
    got = iaisreg.isda(xs.asarray(s), [[0], [1, 2]], [[3], [4, 5]], 3)
    np.testing.assert_allclose(np.asarray(got), iaisreg.isda(s, [[0], [1, 2]], [[3], [4, 5]], 3), rtol=1e-12)
    a = np.array([[0.5, 0.5], [0.9, 0.1]])
    b = np.array([[0.5, 0.5], [0.1, 0.9]])
    assert float(iaisreg.m_kl(xs.asarray(a), xs.asarray(b))) == pytest.approx(float(iaisreg.m_kl(a, b)), rel=1e-12)
    t, v = iaisreg.masks_from_lengths(6, xs.asarray([2, 1]), xs.asarray([2, 3]), text_start=1, image_start=4)
    assert is_strict(t) and t.dtype == xs.bool
    assert np.asarray(t).astype(int).tolist() == [[0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    assert np.asarray(v).astype(int).tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]]


def test_bad_input_same_message():
    s = np.zeros((2, 3, 5, 5))
    for n_text, kwargs in ((2, dict(mode="mean")), (None, dict(text_mask=np.ones((2, 4), bool))), (6, {})):
        with pytest.raises((TypeError, ValueError)) as want:
            iaisreg.iais(s, n_text, **kwargs)
        strict = {k: xs.asarray(v) for k, v in kwargs.items() if isinstance(v, np.ndarray)}
        with pytest.raises(type(want.value)) as got:
            iaisreg.iais(xs.asarray(s), n_text, **{**kwargs, **strict})
        assert str(got.value) == str(want.value)
