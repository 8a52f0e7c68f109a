"""The TensorFlow adapter: the private array namespace, ``tf.function`` and
``tf.GradientTape``, and the Keras loss, schedule and callback. (Numerical
agreement with the NumPy reference on random cases lives in
``tests/test_backends.py``.)"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from backends import requested

if "tf" not in requested():
    pytest.skip("tf not in IAISREG_BACKENDS", allow_module_level=True)

import tensorflow as tf  # noqa: E402 - a requested backend that fails to import fails the run

import iaisreg  # noqa: E402
import iaisreg.tf as itf  # noqa: E402
from iaisreg._ops import device_of  # noqa: E402
from iaisreg.tf import _namespace as xp  # noqa: E402
from conftest import option_defaults, scores_and_roles, signature_defaults  # noqa: E402


# ------------------------------------------------------------------ the namespace
def test_namespace_covers_every_call_in_the_core():
    import re

    core = Path(iaisreg.__file__).parent
    used = set()
    for path in core.glob("*.py"):
        used |= set(re.findall(r"\bxp\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    missing = sorted(name for name in used if not hasattr(xp, name))
    assert not missing, missing


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_take_along_axis_matches_numpy(axis):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4))
    shape = list(x.shape)
    shape[axis] = 5
    idx = rng.integers(0, x.shape[axis], size=shape)
    got = xp.take_along_axis(tf.constant(x), tf.constant(idx), axis=axis).numpy()
    np.testing.assert_array_equal(got, np.take_along_axis(x, idx, axis=axis))
    # broadcasting indices on the other axes, as the array API allows
    bidx = idx[:1] if axis not in (0, -3) else idx[:, :1]
    got = xp.take_along_axis(tf.constant(x), tf.constant(bidx), axis=axis).numpy()
    np.testing.assert_array_equal(got, np.take_along_axis(x, np.broadcast_to(bidx, shape), axis=axis))


def test_take_along_axis_gradient():
    x = tf.constant(np.arange(6.0).reshape(2, 3))
    idx = tf.constant([[2, 2], [0, 1]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(xp.take_along_axis(x, idx, axis=1))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [[0, 0, 2], [1, 1, 0]])


def test_argmax_ties_go_first_and_no_gradient():
    x = tf.constant([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, -1.0, 5.0, 5.0]])
    assert xp.argmax(x, axis=-1).numpy().tolist() == [1, 0, 2]
    assert xp.argmax(x, axis=0).numpy().tolist() == [1, 0, 2, 2]
    assert xp.argmax(x).numpy().tolist() == 10
    assert xp.argmax(x, axis=1, keepdims=True).shape == (3, 1)
    assert xp.argmax(x).dtype == tf.int64


def test_dtypes_and_creation():
    assert xp.isdtype(tf.float16, "real floating") and xp.isdtype(tf.bfloat16, "real floating")
    assert xp.isdtype(tf.uint8, "integral") and not xp.isdtype(tf.uint8, "signed integer")
    assert xp.isdtype(tf.bool, "bool") and not xp.isdtype(tf.bool, "numeric")
    assert xp.isdtype(tf.int32, ("bool", "integral")) and xp.isdtype(tf.int32, tf.int32)
    with pytest.raises(ValueError, match="unknown kind"):
        xp.isdtype(tf.int32, "integer")
    assert xp.finfo(tf.float32).smallest_normal == np.finfo(np.float32).smallest_normal
    assert xp.finfo(tf.bfloat16).eps == 2.0 ** -7
    assert xp.finfo(tf.constant(1.0, tf.float64)).min == np.finfo(np.float64).min
    with pytest.raises(TypeError):
        xp.finfo(tf.int32)
    assert xp.arange(4).dtype == tf.int64 and xp.arange(1, 4).numpy().tolist() == [1, 2, 3]
    assert xp.arange(0.0, 1.0, 0.5).dtype == tf.float32
    assert xp.zeros((2,), dtype=tf.bool).dtype == tf.bool
    assert xp.asarray([1.0], dtype=tf.float64).dtype == tf.float64
    assert xp.asarray(tf.constant([1, 2]), dtype=tf.float32).dtype == tf.float32
    dev = device_of(tf.constant(1.0), xp)
    assert "CPU" in dev.upper()
    assert xp.asarray(1.0, dtype=tf.float32, device=dev).device == tf.constant(1.0).device
    # Python scalars take the tensor's dtype (TensorFlow does not promote)
    h = tf.constant([1.0, -2.0], tf.float16)
    assert xp.where(h > 0, h, 0.0).dtype == tf.float16
    assert xp.maximum(h, 1).dtype == tf.float16
    assert xp.clip(h, 0.0, 0.5).numpy().tolist() == [0.5, 0.0]
    assert xp.sum(tf.constant([[1, 2], [3, 4]]), axis=(0, 1)).numpy() == 10
    assert xp.any(tf.constant([0, 2]))


def test_softmax_delegates_to_tf_nn():
    from iaisreg import _ops

    x = tf.constant(np.random.default_rng(0).normal(size=(3, 5)))
    np.testing.assert_allclose(_ops.softmax(x, xp).numpy(), tf.nn.softmax(x).numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(_ops.log_softmax(x, xp).numpy(), tf.nn.log_softmax(x).numpy(), rtol=0, atol=0)


# ------------------------------------------------------------------ the functions
def test_tf_function_and_gradient_tape():
    s, roles = scores_and_roles()
    kw = dict(mode="singular", anchor="both", variant="official", heads="per_head", reduction="none")
    want = iaisreg.iais(s, text_mask=roles == 0, image_mask=roles == 1, **kw)

    @tf.function(input_signature=[tf.TensorSpec(s.shape, tf.float64), tf.TensorSpec(roles.shape, tf.bool),
                                  tf.TensorSpec(roles.shape, tf.bool)])
    def loss_and_grad(x, t, v):
        with tf.GradientTape() as tape:
            tape.watch(x)
            per = itf.iais(x, text_mask=t, image_mask=v, **kw)
            total = tf.reduce_sum(per)
        return per, tape.gradient(total, x)

    per, grad = loss_and_grad(tf.constant(s), tf.constant(roles == 0), tf.constant(roles == 1))
    np.testing.assert_allclose(per.numpy(), want, rtol=1e-12)
    assert grad.shape == s.shape
    pad = np.broadcast_to((roles == 2)[:, None, :, None], s.shape)
    assert np.all(grad.numpy()[pad] == 0)
    # the graph holds no Python callback (no host round trip)
    graph = loss_and_grad.get_concrete_function().graph.as_graph_def()
    assert not {n.op for n in graph.node} & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}


def test_variables_int32_lengths_and_numpy_masks():
    s, roles = scores_and_roles(1)
    v = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = itf.iais(v, tf.constant([2, 3, 5], tf.int32), attention_mask=roles != 2)
    g = tape.gradient(loss, v)
    assert g is not None and g.shape == s.shape
    np.testing.assert_allclose(float(loss), float(iaisreg.iais(s, np.array([2, 3, 5]), attention_mask=roles != 2)),
                               rtol=1e-12)
    # the core itself accepts TensorFlow tensors with NumPy masks, inside tf.function too
    f = tf.function(lambda x: iaisreg.iais(x, text_mask=roles == 0, image_mask=roles == 1, mode="distributed"))
    np.testing.assert_allclose(float(f(tf.constant(s))),
                               float(iaisreg.iais(s, text_mask=roles == 0, image_mask=roles == 1, mode="distributed")),
                               rtol=1e-12)


def test_numpy_arguments_are_converted():
    """NumPy groups and lengths mixed with tensors (the cross-backend suite
    passes every array as a tensor)."""
    s, _ = scores_and_roles(3)
    groups = np.zeros((2, 8), bool)
    groups[0, [0, 3]] = groups[1, [1, 2, 4, 5]] = True
    np.testing.assert_allclose(itf.isda(tf.constant(s), tf.constant(groups), groups, 3).numpy(),
                               iaisreg.isda(s, groups, groups, 3), rtol=1e-12)
    t, v = itf.masks_from_lengths(8, tf.constant([2, 3]), np.array([3, 1]), text_start=1,
                                  image_start=tf.constant([4, 5], tf.int64))
    assert tf.cast(t, tf.int32).numpy().tolist() == [[0, 1, 1, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0, 0]]
    assert tf.cast(v, tf.int32).numpy().tolist() == [[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1, 0, 0]]
    with pytest.raises(TypeError, match=r"iais: argument 'attn' must be a tf.Tensor"):
        itf.iais(s.tolist(), 2)


def test_lambda_schedule():
    for name in ("exp", "linear", "log", "constant"):
        f = itf.lambda_schedule(name, 100, gamma=5.0, value=0.5)
        core = iaisreg.get_schedule(name, 100, gamma=5.0, value=0.5)
        g = tf.function(f)
        for step in (0, 25, 100, 300):
            assert float(f(step)) == pytest.approx(core(step), rel=1e-6)
            assert float(g(tf.constant(step, tf.int64))) == pytest.approx(core(step), rel=1e-6)
        assert f(tf.constant(3)).dtype == tf.float32
    with pytest.raises(TypeError, match="step"):
        itf.lambda_schedule("exp", 10)("3")


# ------------------------------------------------------------------ Keras
def test_keras_loss_matches_iais():
    s, roles = scores_and_roles(4)
    y_true = np.where(roles == 0, 1, np.where(roles == 1, 2, 0))  # 1 text, 2 image, 0 neither
    x = tf.constant(s, tf.float32)
    loss = itf.IAISLoss(mode="distributed", anchor="both")
    want = itf.iais(x, text_mask=roles == 0, image_mask=roles == 1, mode="distributed", anchor="both")
    np.testing.assert_allclose(float(loss(y_true, x)), float(want), rtol=1e-6)
    w = np.array([1.0, 0.0, 2.0])
    per = itf.iais(x, text_mask=roles == 0, image_mask=roles == 1, mode="distributed", anchor="both", reduction="none")
    np.testing.assert_allclose(float(loss(y_true, x, sample_weight=w)), float(tf.reduce_sum(per * w)) / 3, rtol=1e-6)
    fixed = itf.IAISLoss(n_text=3, reduction="sum")
    np.testing.assert_allclose(float(fixed(np.zeros(3), x)), float(itf.iais(x, 3, reduction="sum")), rtol=1e-6)
    keras_options = option_defaults(without=("reduction",))  # Keras has its own reduction
    assert signature_defaults(itf.IAISLoss, keras_options) == keras_options
    assert itf.IAISLoss(anchor="L").options == {**keras_options, "anchor": "L"}
    with pytest.raises(ValueError, match=r"IAISLoss: argument 'mode' must be one of"):
        itf.IAISLoss(mode="x")
    with pytest.raises(TypeError, match="n_text"):
        itf.IAISLoss(n_text=2.5)


def test_keras_loss_schedule_and_serialisation():
    import keras

    s, roles = scores_and_roles(5)
    y_true = np.where(roles == 0, 1, np.where(roles == 1, 2, 0))
    x = tf.constant(s, tf.float32)
    loss = itf.IAISLoss(schedule="exp", total_steps=10)
    plain = float(itf.iais(x, text_mask=roles == 0, image_mask=roles == 1))
    np.testing.assert_allclose(float(loss(y_true, x)), plain * math.exp(-5), rtol=1e-5)
    loss.step.assign(5)
    np.testing.assert_allclose(float(loss(y_true, x)), plain * math.exp(-2.5), rtol=1e-5)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, itf.IAISLoss) and clone.options == loss.options
    assert clone.schedule.get_config() == loss.schedule.get_config()
    sched = itf.LambdaSchedule("log", 20, gamma=3.0)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(sched))
    assert float(again(10)) == pytest.approx(1 - math.exp(-1.5), rel=1e-6)
    custom = itf.IAISLoss(schedule=lambda step: 0.5)
    np.testing.assert_allclose(float(custom(y_true, x)), plain * 0.5, rtol=1e-5)


def test_keras_fit_with_callback():
    """``model.fit`` with the IAIS loss on an attention-score output, annealed
    by the optimizer's step through ``IAISStepCallback``."""
    import keras

    b, n, d, h = 8, 6, 8, 2

    class Scores(keras.layers.Layer):
        def build(self, shape):
            self.wq = self.add_weight(shape=(shape[-1], d), initializer="glorot_uniform")
            self.wk = self.add_weight(shape=(shape[-1], d), initializer="glorot_uniform")

        def call(self, x):
            q = tf.reshape(x @ self.wq, (-1, n, h, d // h))
            k = tf.reshape(x @ self.wk, (-1, n, h, d // h))
            return tf.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // h)

    inp = keras.Input((n, 4))
    model = keras.Model(inp, {"scores": Scores()(inp)})
    loss = itf.IAISLoss(schedule="exp", total_steps=4)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss={"scores": loss})
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(b, n, 4)).astype("float32")
    roles = np.tile([1, 1, 2, 2, 2, 0], (b, 1)).astype("float32")
    hist = model.fit(xs, {"scores": roles}, batch_size=4, epochs=1, verbose=0, callbacks=[itf.IAISStepCallback(loss)])
    assert int(loss.step.numpy()) == 1  # set before the second (last) batch
    assert np.isfinite(hist.history["loss"]).all()
    with pytest.raises(TypeError, match="IAISLoss"):
        itf.IAISStepCallback("not a loss")
