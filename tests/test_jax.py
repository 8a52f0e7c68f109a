"""The JAX adapter: jit / grad / vmap, the compiled ``iais_jit``, ``IAISLoss``,
the Flax-layout ``attention_scores`` helper and the optax-style schedule.
(Numerical agreement with the NumPy reference on random cases lives in
``tests/test_backends.py``.)"""
from __future__ import annotations

import math

import numpy as np
import pytest

from backends import requested

if "jax" not in requested():
    pytest.skip("jax not in IAISREG_BACKENDS", allow_module_level=True)

import jax  # noqa: E402 - a requested backend that fails to import fails the run
import jax.numpy as jnp  # noqa: E402

import iaisreg  # noqa: E402
import iaisreg.jax as ij  # noqa: E402
from backends import jax_x64  # noqa: E402
from conftest import option_defaults, scores_and_roles, signature_defaults  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _float64():
    with jax_x64():
        yield


def test_jit_with_static_argnames_matches_numpy():
    s, roles = scores_and_roles()
    kw = dict(mode="distributed", anchor="both", variant="paper", heads="mean_scores", reduction="none")
    want = iaisreg.iais(s, text_mask=roles == 0, image_mask=roles == 1, **kw)
    f = jax.jit(ij.iais, static_argnames=ij.STATIC_ARGNAMES)
    got = f(jnp.asarray(s), text_mask=jnp.asarray(roles == 0), image_mask=jnp.asarray(roles == 1), **kw)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    f2 = jax.jit(ij.iais, static_argnames=("n_text",) + ij.STATIC_ARGNAMES)
    np.testing.assert_allclose(np.asarray(f2(jnp.asarray(s), 3, mode="singular")), iaisreg.iais(s, 3), rtol=1e-12)


def test_iais_jit_static_and_traced_n_text():
    s, roles = scores_and_roles(1)
    x = jnp.asarray(s)
    for n_text in (3, jnp.asarray([2, 3, 5]), np.array([2, 3, 5])):
        got = ij.iais_jit(x, n_text, anchor="L", variant="paper")
        want = iaisreg.iais(s, n_text if isinstance(n_text, int) else np.asarray(n_text), anchor="L", variant="paper")
        np.testing.assert_allclose(float(got), float(want), rtol=1e-12)
    # masks traced: one compilation serves every layout of the same shape
    before = ij._iais_compiled._cache_size()
    for seed in range(3):
        _, r = scores_and_roles(seed)
        got = ij.iais_jit(x, text_mask=jnp.asarray(r == 0), image_mask=jnp.asarray(r == 1))
        np.testing.assert_allclose(float(got), float(iaisreg.iais(s, text_mask=r == 0, image_mask=r == 1)), rtol=1e-12)
    assert ij._iais_compiled._cache_size() - before <= 1


def test_vmap_over_layers_and_masks():
    s, roles = scores_and_roles(3)
    layers = np.stack([s, 2 * s, -s])  # (L, B, H, N, N)
    f = jax.vmap(lambda x, t, v: ij.iais(x, text_mask=t, image_mask=v, mode="distributed", reduction="none"),
                 in_axes=(0, None, None))
    got = f(jnp.asarray(layers), jnp.asarray(roles == 0), jnp.asarray(roles == 1))
    want = [iaisreg.iais(l, text_mask=roles == 0, image_mask=roles == 1, mode="distributed", reduction="none")
            for l in layers]
    np.testing.assert_allclose(np.asarray(got), np.stack(want), rtol=1e-12)
    # vmap over samples, each a batch of one, with per-sample lengths
    lens = jnp.asarray([2, 3, 4])
    g = jax.vmap(lambda x, k: ij.iais(x[None], k[None]))(jnp.asarray(s), lens)
    np.testing.assert_allclose(np.asarray(g), iaisreg.iais(s, np.array([2, 3, 4]), reduction="none"), rtol=1e-12)
    # and under jit(grad(vmap))
    jg = jax.jit(jax.grad(lambda x: jnp.sum(f(x, jnp.asarray(roles == 0), jnp.asarray(roles == 1)))))
    assert jg(jnp.asarray(layers)).shape == layers.shape


def test_traced_values_are_not_read():
    """No value check (and no host synchronisation) on traced arrays: out-of-range
    lengths and overlapping masks pass through jit without a concretization error."""
    s, _ = scores_and_roles(4)
    f = jax.jit(lambda x, k: ij.iais(x, k))
    assert np.isfinite(float(f(jnp.asarray(s), jnp.asarray([1, 2, 9]))))
    both = jnp.ones((3, 8), bool)
    g = jax.jit(lambda x, t, v: ij.iais(x, text_mask=t, image_mask=v))
    assert np.isfinite(float(g(jnp.asarray(s), both, both)))
    jaxpr = str(jax.make_jaxpr(lambda x, t, v: ij.iais(x, text_mask=t, image_mask=v))(jnp.asarray(s), both, both))
    assert "callback" not in jaxpr


def test_numpy_inputs_are_converted_and_others_rejected():
    s, _ = scores_and_roles(6)
    out = ij.iais(s, 3)
    assert isinstance(out, jax.Array)
    with pytest.raises(TypeError, match=r"iais: argument 'attn' must be a jax.Array .*; got list"):
        ij.iais(s.tolist(), 3)


def test_attention_scores_flax_layout():
    rng = np.random.default_rng(8)
    q = rng.normal(size=(2, 5, 3, 4))  # (batch, length, heads, head_dim)
    k = rng.normal(size=(2, 6, 3, 4))
    got = np.asarray(ij.attention_scores(jnp.asarray(q), jnp.asarray(k)))
    want = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
    assert got.shape == (2, 3, 5, 6)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ij.attention_scores(jnp.asarray(q), jnp.asarray(k), scale=1.0)), want * 2,
                               rtol=1e-12)
    # no batch axis, and the scores feed iais directly (one sample of self-attention)
    qs = jnp.asarray(rng.normal(size=(1, 7, 2, 4)))
    loss = ij.iais(ij.attention_scores(qs, qs), 3)
    assert loss.shape == ()
    with pytest.raises(ValueError, match=r"'query' \(\.\.\., N, H, D\) and 'key'"):
        ij.attention_scores(jnp.ones((2, 5, 3, 4)), jnp.ones((2, 5, 2, 4)))
    with pytest.raises(ValueError, match=r"argument 'query' must have shape \(\.\.\., N, H, D\)"):
        ij.attention_scores(jnp.ones((5, 4)), jnp.ones((5, 4)))


def test_lambda_schedule_is_optax_style():
    for name in ("exp", "linear", "log", "constant"):
        f = ij.lambda_schedule(name, 100, gamma=5.0, value=0.5)
        core = iaisreg.get_schedule(name, 100, gamma=5.0, value=0.5)
        counts = jnp.arange(0, 201, 25, dtype=jnp.int32)  # optax passes int32 step counts
        got = jax.jit(jax.vmap(f))(counts)
        np.testing.assert_allclose(np.asarray(got), [core(int(c)) for c in counts], rtol=1e-6)
        assert float(f(50)) == pytest.approx(core(50), rel=1e-6)
    with pytest.raises(ValueError, match="total_steps"):
        ij.lambda_schedule("exp", 0)
    with pytest.raises(ValueError, match="name"):
        ij.lambda_schedule("cosine", 10)
    with pytest.raises(TypeError, match="exp_schedule: argument .step. must be a number"):
        ij.lambda_schedule("exp", 10)("3")


def test_iais_loss_dataclass():
    s, roles = scores_and_roles(9)
    crit = ij.IAISLoss(mode="distributed", anchor="L", schedule="exp", total_steps=10)
    assert hash(crit) == hash(ij.IAISLoss(mode="distributed", anchor="L", schedule="exp", total_steps=10))
    x = jnp.asarray(s)
    plain = ij.iais(x, 3, mode="distributed", anchor="L")
    np.testing.assert_allclose(float(crit(x, 3)), float(plain), rtol=1e-12)
    np.testing.assert_allclose(float(crit(x, 3, step=10)), float(plain), rtol=1e-12)
    np.testing.assert_allclose(float(crit(x, 3, step=5)), float(plain) * math.exp(-2.5), rtol=1e-6)

    @jax.jit
    def step_fn(x, step):
        return crit(x, 3, step=step)

    np.testing.assert_allclose(float(step_fn(x, jnp.asarray(5))), float(plain) * math.exp(-2.5), rtol=1e-6)
    static = jax.jit(lambda c, x: c(x, 3), static_argnums=0)
    np.testing.assert_allclose(float(static(crit, x)), float(plain), rtol=1e-12)
    assert crit.options == {**option_defaults(), "mode": "distributed", "anchor": "L"}
    assert signature_defaults(ij.IAISLoss, iaisreg.OPTIONS) == option_defaults()
    assert signature_defaults(ij.iais_jit, iaisreg.OPTIONS) == option_defaults()
    assert set(iaisreg.OPTIONS) < set(ij.STATIC_ARGNAMES)
    with pytest.raises(ValueError, match=r"IAISLoss: argument 'anchor' must be one of"):
        ij.IAISLoss(anchor="X")
    with pytest.raises(ValueError, match="total_steps"):
        ij.IAISLoss(schedule="exp")
