"""One tester for every public object, as torchmetrics runs every metric
through one tester.

Each public object is a :class:`Subject` of :data:`SUBJECTS`: how to make it
on a backend and how to use it on fixed inputs. The checks run over every
subject of the backends in ``IAISREG_BACKENDS``:

=================  ===========================================================
check              what must hold
=================  ===========================================================
round trip         ``pickle`` and ``copy.deepcopy`` give an object that
                   computes the same results (and, for objects with value
                   equality, compares equal)
repr               ``repr`` says the options
torch saving       ``torch.save``/``torch.load(weights_only=True)`` of a model's
                   state dict, and ``torch.save`` of the whole module holding
                   the loss and a ``ScoreCapture``
Keras saving       ``model.save``/``keras.models.load_model`` with the loss and
                   its schedule: the same loss after loading
dynamic shapes     ``torch.compile(dynamic=True)``: one graph for every size;
                   ``jax.jit`` over two sizes; ``tf.function`` with unknown
                   batch and sequence sizes; ``model.fit`` with a ``None``
                   batch (a partial last batch) and a ``None`` sequence length
mixed precision    torch autocast bf16 on CPU, Keras ``mixed_float16``, JAX
                   bf16 inputs: the loss comes back float32 and finite
compiled steps     every schedule under ``torch.compile(fullgraph=True)``,
                   ``jax.jit`` and ``tf.function`` on a step tensor
=================  ===========================================================

The two failures of issue 15 are among the cases: pickling/``torch.save`` of a
module holding ``IAISLoss(schedule="exp", total_steps=100)``
(``test_round_trip[iaisreg.torch.IAISLoss-...]``, ``test_torch_save``) and
``model.fit`` of a functional Keras model with a ``None`` batch
(``test_keras_fit_none_batch_save_and_load``).
"""
from __future__ import annotations

import copy
import dataclasses
import io
import math
import pickle
from typing import Any, Callable

import numpy as np
import pytest

import iaisreg
from backends import load, requested
from conftest import scores_and_roles

BACKENDS = requested()
PREFIX = {"numpy": "iaisreg", "torch": "iaisreg.torch", "jax": "iaisreg.jax", "tf": "iaisreg.tf"}

# ------------------------------------------------------------------ fixed inputs
S, ROLES = scores_and_roles(0, b=3, h=2, n=8)
X = S.astype(np.float32)  # (3, 2, 8, 8)
TEXT, IMAGE = ROLES == 0, ROLES == 1
Y_TRUE = np.where(TEXT, 1, np.where(IMAGE, 2, 0)).astype(np.float32)  # the Keras loss's roles
LENGTHS = (np.array([2, 3, 1], np.int32), np.array([3, 2, 4], np.int32))
_rng = np.random.default_rng(1)
P, Q = (_rng.dirichlet(np.ones(4), size=(3, 4)).astype(np.float32) for _ in range(2))
GROUPS_T, GROUPS_V = _rng.random((3, 2, 8)) < 0.5, _rng.random((3, 2, 8)) < 0.5
HIDDEN = _rng.normal(size=(3, 8, 8)).astype(np.float32)  # ScoreCapture's layer input
OPTS = dict(mode="distributed", anchor="both")  # the loss subjects' options; repr must say them
SHOWS_OPTS = ("mode='distributed'", "anchor='both'")
SCHEDULES = [iaisreg.exp_schedule(100), iaisreg.linear_schedule(100), iaisreg.log_schedule(100, gamma=3.0),
             iaisreg.constant_schedule(0.25)]


def masks(b: Any) -> dict:
    return {"text_mask": b.asarray(TEXT), "image_mask": b.asarray(IMAGE)}


def reference(x: np.ndarray = S, text: np.ndarray = TEXT, image: np.ndarray = IMAGE, **opts: Any) -> float:
    """The NumPy core in float64 on the same values."""
    return float(iaisreg.iais(np.asarray(x, np.float64), text_mask=text, image_mask=image, **{**OPTS, **opts}))


# ------------------------------------------------------------------ subjects
@dataclasses.dataclass(frozen=True)
class Subject:
    """A public object: ``make(backend)`` builds it, ``run(obj, backend)``
    uses it on the fixed inputs (returns arrays, numbers or tuples of them);
    ``shows``: what its ``repr`` must say; ``by_value``: copies compare equal."""

    name: str
    backend: str
    make: Callable[[Any], Any]
    run: Callable[[Any, Any], Any]
    shows: tuple = ()
    by_value: bool = False

    def __str__(self) -> str:
        return self.name


def function_subjects(name: str) -> list[Subject]:
    """``iais``, ``isda``, ``m_kl``, ``masks_from_lengths`` of one backend's module."""
    def fn(attr: str) -> Callable[[Any], Any]:
        return lambda b: getattr(b.module, attr)

    runs = {
        "iais": lambda f, b: f(b.asarray(X), **masks(b), **OPTS),
        "isda": lambda f, b: f(b.asarray(X), b.asarray(GROUPS_T), b.asarray(GROUPS_V), **masks(b)),
        "m_kl": lambda f, b: f(b.asarray(P), b.asarray(Q)),
        "masks_from_lengths": lambda f, b: f(8, *(b.asarray(v) for v in LENGTHS), text_start=1),
    }
    return [Subject(f"{PREFIX[name]}.{attr}", name, fn(attr), run) for attr, run in runs.items()]


def schedule_subjects(name: str) -> list[Subject]:
    """The core schedules, called on a Python step and on the backend's step arrays."""
    def run(f: Any, b: Any) -> list:
        return [f(30), f(b.asarray(np.asarray(30, np.int32))), f(b.asarray(np.asarray(30.0, np.float32)))]

    return [Subject(f"iaisreg.{s.factory} on {name}", name, lambda b, s=s: copy.copy(s), run, shows=(repr(s),),
                    by_value=True) for s in SCHEDULES]


def torch_subjects() -> list[Subject]:
    import objects_torch

    import iaisreg.torch as it

    def run_loss(crit: Any, b: Any) -> list:
        return [crit(b.asarray(X), **masks(b), step=50), crit(b.asarray(X), **masks(b), step=b.torch.tensor(50))]

    def run_capture(cap: Any, b: Any) -> Any:
        cap.module(b.asarray(HIDDEN))
        return cap.scores

    loss = Subject("iaisreg.torch.IAISLoss", "torch", lambda b: it.IAISLoss(schedule="exp", total_steps=100, **OPTS),
                   run_loss, shows=SHOWS_OPTS + ("schedule=ExpSchedule(total_steps=100, gamma=5.0)",))
    capture = Subject("iaisreg.torch.ScoreCapture", "torch", lambda b: objects_torch.make_capture(), run_capture,
                      shows=("TinyAttention", "num_heads=2"))
    return [loss, capture]


def jax_subjects() -> list[Subject]:
    import jax

    import iaisreg.jax as ij

    def run_loss(crit: Any, b: Any) -> list:
        jitted = jax.jit(lambda x, t, v, step: crit(x, text_mask=t, image_mask=v, step=step))
        return [crit(b.asarray(X), **masks(b), step=50), jitted(b.asarray(X), *masks(b).values(), b.jnp.asarray(50))]

    def run_schedule(f: Any, b: Any) -> list:
        return [f(30), jax.jit(f)(b.jnp.asarray(30))]

    return [
        Subject("iaisreg.jax.IAISLoss", "jax", lambda b: ij.IAISLoss(schedule="exp", total_steps=100, **OPTS),
                run_loss, shows=SHOWS_OPTS + ("schedule='exp'", "total_steps=100"), by_value=True),
        Subject("iaisreg.jax.iais_jit", "jax", lambda b: ij.iais_jit,
                lambda f, b: [f(b.asarray(X), **masks(b), **OPTS), f(b.asarray(X), 3, **OPTS)]),
        Subject("iaisreg.jax.lambda_schedule", "jax", lambda b: ij.lambda_schedule("log", 100, gamma=3.0),
                run_schedule, shows=("LogSchedule(total_steps=100, gamma=3.0)",), by_value=True),
    ]


def tf_subjects() -> list[Subject]:
    import tensorflow as tf

    import iaisreg.tf as itf

    def run_schedule(f: Any, b: Any) -> list:
        return [f(30), tf.function(f)(tf.constant(30, tf.int64))]

    def make_loss(b: Any) -> Any:
        return itf.IAISLoss(schedule="exp", total_steps=100, step=50, **OPTS)

    return [
        Subject("iaisreg.tf.IAISLoss", "tf", make_loss, lambda loss, b: loss(Y_TRUE, b.asarray(X)),
                shows=SHOWS_OPTS + ("n_text=None", "name='exp'", "total_steps=100")),
        Subject("iaisreg.tf.LambdaSchedule", "tf", lambda b: itf.LambdaSchedule("log", 100, gamma=3.0),
                run_schedule, shows=("name='log'", "total_steps=100", "gamma=3.0"), by_value=True),
        Subject("iaisreg.tf.lambda_schedule", "tf", lambda b: itf.lambda_schedule("log", 100, gamma=3.0),
                run_schedule, shows=("LogSchedule(total_steps=100, gamma=3.0)",), by_value=True),
        Subject("iaisreg.tf.IAISStepCallback", "tf", lambda b: itf.IAISStepCallback(make_loss(b)), run_callback,
                shows=("IAISStepCallback(IAISLoss(",) + SHOWS_OPTS),
    ]


def run_callback(cb: Any, b: Any) -> list:
    """The callback on a model whose optimizer has made 7 steps: the loss's step and value."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(7)
    cb.set_model(model)
    cb.on_train_batch_begin(0)
    return [cb.loss.step, cb.loss(Y_TRUE, b.asarray(X))]


ADAPTER_SUBJECTS = {"torch": torch_subjects, "jax": jax_subjects, "tf": tf_subjects}


def all_subjects() -> list[Subject]:
    out = []
    for name in BACKENDS:
        out += function_subjects(name) + schedule_subjects(name)
        out += ADAPTER_SUBJECTS[name]() if name in ADAPTER_SUBJECTS else []
    return out


SUBJECTS = all_subjects()


# ------------------------------------------------------------------ round trips and repr
def as_numpy(result: Any, b: Any) -> Any:
    if isinstance(result, (tuple, list)):
        return [as_numpy(r, b) for r in result]
    if hasattr(result, "dtype") and not isinstance(result, np.ndarray):
        return np.asarray(b.to_numpy(result) if hasattr(result, "shape") else result)
    return np.asarray(result)


def assert_same(got: Any, want: Any, what: str) -> None:
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), what
        for g, w in zip(got, want):
            assert_same(g, w, what)
        return
    np.testing.assert_array_equal(got, want, err_msg=what)


def pickle_round_trip(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("copier", [pickle_round_trip, copy.deepcopy], ids=["pickle", "deepcopy"])
@pytest.mark.parametrize("subject", SUBJECTS, ids=str)
def test_round_trip(subject, copier):
    """The copy computes what the original computes; objects with value
    equality compare equal to their copies."""
    b = load(subject.backend)
    obj = subject.make(b)
    want = as_numpy(subject.run(obj, b), b)
    again = copier(obj)
    assert_same(as_numpy(subject.run(again, b), b), want, f"{subject}: {copier.__name__}")
    assert_same(as_numpy(subject.run(obj, b), b), want, f"{subject}: original after copying")
    if subject.by_value:
        assert again == obj and hash(again) == hash(obj)


@pytest.mark.parametrize("subject", [s for s in SUBJECTS if s.shows], ids=str)
def test_repr_says_the_options(subject):
    text = repr(subject.make(load(subject.backend)))
    missing = [s for s in subject.shows if s not in text]
    assert not missing, (text, missing)


def needs(name: str) -> Any:
    return pytest.mark.skipif(name not in BACKENDS, reason=f"{name} not in IAISREG_BACKENDS")


# ------------------------------------------------------------------ torch: saving
@needs("torch")
def test_torch_save():
    """``torch.save`` of a model's state dict loads with ``weights_only=True``
    into a fresh model; ``torch.save`` of the whole module (holding an
    ``IAISLoss(schedule="exp", total_steps=100)`` and a ``ScoreCapture``)
    loads as a working module. Both give the same loss."""
    import torch
    from objects_torch import Holder

    b = load("torch")
    args = (b.asarray(HIDDEN), b.asarray(TEXT), b.asarray(IMAGE), 50)
    model = Holder()
    with torch.no_grad():
        model.attn.query.weight.add_(0.5)  # differs from a fresh Holder's weights
    want = model(*args)

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    fresh = Holder()
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    torch.testing.assert_close(fresh(*args), want, rtol=0, atol=0)

    buf = io.BytesIO()
    torch.save(model, buf)
    whole = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    torch.testing.assert_close(whole(*args), want, rtol=0, atol=0)
    assert whole.loss.schedule == model.loss.schedule and whole.capture.module is whole.attn


# ------------------------------------------------------------------ torch: one graph for every size
def sized_case(b: int, n: int, seed: int = 3) -> tuple:
    """Scores ``(b, 2, n, n)`` (float32) with text items at the first third
    of the valid positions and image items after them; the last position of
    sample 0 is padding."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=(b, 2, n, n)).astype(np.float32)
    pos = np.arange(n)[None, :]
    valid = np.ones((b, n), bool)
    valid[0, -1] = False
    text = (pos < n // 3) & valid
    return x, text, ~text & valid


SIZES = ((3, 7), (4, 9), (5, 11))  # B never equals H = 2 or N: no size is specialised by coincidence


@needs("torch")
def test_torch_compile_dynamic_one_graph():
    """``torch.compile(dynamic=True, fullgraph=True)`` of a step with
    ``IAISLoss`` and ``iais`` (masks, an int ``n_text``, ``(B,)`` lengths)
    compiles for the first batch size and sequence length, forward and
    backward, and not again for the next two; it matches the NumPy
    reference. (The first compilation may call the backend twice: dynamo
    restarts its analysis once to turn Python float constants into graph
    inputs.)"""
    import torch
    from torch._dynamo.testing import CompileCounterWithBackend

    import iaisreg.torch as it

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    crit = it.IAISLoss(**OPTS)

    def step(x, t, v):
        return (crit(x, text_mask=t, image_mask=v) + it.iais(x, 2, **OPTS)
                + it.iais(x, t.sum(-1), attention_mask=t | v, **OPTS))

    compiled = torch.compile(step, backend=counter, dynamic=True, fullgraph=True)
    first = None
    for b, n in SIZES:
        x, t, v = sized_case(b, n)
        xt = torch.from_numpy(x).requires_grad_()
        got = compiled(xt, torch.from_numpy(t), torch.from_numpy(v))
        got.backward()
        want = (reference(x, t, v) + float(iaisreg.iais(x.astype(np.float64), 2, **OPTS))
                + float(iaisreg.iais(x.astype(np.float64), t.sum(-1), attention_mask=t | v, **OPTS)))
        np.testing.assert_allclose(float(got.detach()), want, rtol=1e-5)
        assert torch.isfinite(xt.grad).all()
        first = counter.frame_count if first is None else first
    assert counter.frame_count == first > 0, f"recompiled for new sizes: {counter.frame_count} > {first}"


# ------------------------------------------------------------------ jax: two sizes
@needs("jax")
def test_jax_jit_two_sizes():
    """``jax.jit`` of ``iais``, of ``IAISLoss`` and ``iais_jit`` at two batch
    sizes and sequence lengths (one compilation each, as JAX does) match the
    NumPy reference."""
    import jax
    import jax.numpy as jnp

    import iaisreg.jax as ij

    crit = ij.IAISLoss(**OPTS)
    f = jax.jit(lambda x, t, v: ij.iais(x, text_mask=t, image_mask=v, **OPTS))
    g = jax.jit(lambda x, t, v: crit(x, text_mask=t, image_mask=v))
    for b, n in SIZES[:2]:
        x, t, v = sized_case(b, n)
        args = (jnp.asarray(x), jnp.asarray(t), jnp.asarray(v))
        for got in (f(*args), g(*args), ij.iais_jit(args[0], text_mask=args[1], image_mask=args[2], **OPTS)):
            np.testing.assert_allclose(float(got), reference(x, t, v), rtol=1e-5)


# ------------------------------------------------------------------ tf: unknown sizes
@needs("tf")
def test_tf_function_unknown_batch_and_sequence():
    """One ``tf.function`` trace with an ``input_signature`` of unknown batch
    size and sequence length serves two sizes: ``iais`` with masks, an int
    ``n_text`` and ``(B,)`` lengths, and the Keras ``IAISLoss``."""
    import tensorflow as tf

    import iaisreg.tf as itf

    crit = itf.IAISLoss(**OPTS)
    spec = [tf.TensorSpec((None, 2, None, None), tf.float32), tf.TensorSpec((None, None), tf.bool),
            tf.TensorSpec((None, None), tf.bool)]

    @tf.function(input_signature=spec)
    def step(x, t, v):
        roles = tf.where(t, 1.0, tf.where(v, 2.0, 0.0))
        lengths = tf.reduce_sum(tf.cast(t, tf.int64), axis=-1)
        return (itf.iais(x, text_mask=t, image_mask=v, **OPTS), itf.iais(x, 2, **OPTS),
                itf.iais(x, lengths, attention_mask=t | v, **OPTS), crit(roles, x))

    for b, n in SIZES[:2]:
        x, t, v = sized_case(b, n)
        got = [float(r) for r in step(tf.constant(x), tf.constant(t), tf.constant(v))]
        x64 = x.astype(np.float64)
        want = [reference(x, t, v), float(iaisreg.iais(x64, 2, **OPTS)),
                float(iaisreg.iais(x64, t.sum(-1), attention_mask=t | v, **OPTS)), reference(x, t, v)]
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert step.experimental_get_tracing_count() == 1


# ------------------------------------------------------------------ Keras: fit, save, load
def keras_score_model() -> Any:
    """A functional model ``keras.Input((2, 6, 6))`` (batch ``None``) -> a
    trainable ``Dense`` -> scores ``(None, 2, 6, 6)``."""
    import keras

    inp = keras.Input((2, 6, 6))
    return keras.Model(inp, keras.layers.Dense(6, kernel_initializer="glorot_uniform")(inp))


@needs("tf")
def test_keras_fit_none_batch_save_and_load(tmp_path):
    """The functional model with a ``None`` batch dimension trains with
    ``IAISLoss(n_text=3)`` and the paper's schedule for two epochs (10
    samples in batches of 4: the last batch is partial, so Keras traces with a
    ``None`` batch); saved and loaded, it gives the same loss, with the loss's
    options, schedule and step."""
    import keras

    import iaisreg.tf as itf

    keras.utils.set_random_seed(0)
    model = keras_score_model()
    loss = itf.IAISLoss(n_text=3, schedule="exp", total_steps=6, **OPTS)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    x = np.random.default_rng(4).normal(size=(10, 2, 6, 6)).astype("float32")
    y = np.zeros((10, 6), "float32")  # ignored: n_text is fixed
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[itf.IAISStepCallback(loss)])
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert int(loss.step.numpy()) == 5  # set before the last of 2 x 3 batches
    want = model.evaluate(x, y, batch_size=4, verbose=0)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, itf.IAISLoss) and repr(loaded.loss) == repr(loss)
    assert int(loaded.loss.step.numpy()) == 5 and loaded.loss.schedule == loss.schedule
    np.testing.assert_allclose(loaded.evaluate(x, y, batch_size=4, verbose=0), want, rtol=1e-6)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=0)


@needs("tf")
@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the loss reads only the query/key projections
def test_keras_fit_none_sequence_length():
    """``model.fit`` on batches of changing batch size and sequence length
    (a ``tf.data`` pipeline with ``None`` in both): the item roles come in as
    ``y_true``, the scores are a ``MultiHeadAttention``'s probabilities."""
    import keras
    import tensorflow as tf

    import iaisreg.tf as itf

    keras.utils.set_random_seed(0)
    feats = keras.Input((None, 4))
    _, probs = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(feats, feats, return_attention_scores=True)
    model = keras.Model(feats, probs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=itf.IAISLoss(inputs="probs", **OPTS))

    def batches():
        rng = np.random.default_rng(5)
        for b, n in SIZES:
            x, t, v = sized_case(b, n)
            yield rng.normal(size=(b, n, 4)).astype("float32"), np.where(t, 1.0, np.where(v, 2.0, 0.0)).astype("float32")

    data = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec((None, None, 4), tf.float32), tf.TensorSpec((None, None), tf.float32)))
    history = model.fit(data.repeat(), epochs=2, steps_per_epoch=len(SIZES), shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and history.history["loss"][0] > 0


# ------------------------------------------------------------------ mixed precision
def assert_float32_finite(loss: Any, b: Any, what: str) -> float:
    from iaisreg._validate import dtype_name

    assert dtype_name(loss.dtype) == "float32", (what, loss.dtype)
    value = float(b.to_numpy(loss))
    assert math.isfinite(value), (what, value)
    return value


@needs("torch")
def test_torch_autocast_bf16():
    """Under ``torch.autocast("cpu", torch.bfloat16)`` the scores of a layer
    come out in bfloat16; ``IAISLoss`` and ``iais`` give a float32, finite
    loss equal to the loss of the same bfloat16 scores outside autocast, and
    a finite gradient."""
    import torch

    import iaisreg.torch as it

    b = load("torch")
    layer = torch.nn.Linear(8, 8)
    crit = it.IAISLoss(**OPTS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = layer(b.asarray(X))
        assert scores.dtype == torch.bfloat16
        losses = [crit(scores, **masks(b)), it.iais(scores, 3, **OPTS)]
    for loss in losses:
        assert_float32_finite(loss, b, "autocast")
    torch.testing.assert_close(losses[0], it.iais(scores, **masks(b), **OPTS), rtol=0, atol=0)
    sum(losses).backward()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


@needs("jax")
def test_jax_bfloat16_inputs():
    """bfloat16 scores to ``iais``, ``iais_jit`` and ``IAISLoss``: a float32,
    finite loss that matches the float64 reference of the rounded values."""
    import jax
    import jax.numpy as jnp

    import iaisreg.jax as ij
    from backends import round_to

    b = load("jax")
    x = jnp.asarray(X, dtype=jnp.bfloat16)
    want = reference(round_to(X, "bfloat16"))
    crit = ij.IAISLoss(**OPTS)
    for what, loss in (("iais", ij.iais(x, **masks(b), **OPTS)), ("iais_jit", ij.iais_jit(x, **masks(b), **OPTS)),
                       ("IAISLoss", jax.jit(lambda x: crit(x, **masks(b)))(x))):
        np.testing.assert_allclose(assert_float32_finite(loss, b, what), want, rtol=1e-5, err_msg=what)


@needs("tf")
def test_keras_mixed_float16():
    """Under the ``mixed_float16`` policy the model's scores are float16;
    ``IAISLoss`` returns float32, finite, equal to its value on the scores
    cast to float32, and ``model.fit`` trains."""
    import keras
    import tensorflow as tf

    import iaisreg.tf as itf

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras_score_model()
        loss = itf.IAISLoss(n_text=3, **OPTS)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
        x = np.random.default_rng(6).normal(size=(10, 2, 6, 6)).astype("float32")
        scores = model(x)
        assert scores.dtype == tf.float16
        value = assert_float32_finite(loss(np.zeros((10, 6)), scores), load("tf"), "mixed_float16")
        np.testing.assert_allclose(value, float(loss(np.zeros((10, 6)), tf.cast(scores, tf.float32))), rtol=1e-6)
        history = model.fit(x, np.zeros((10, 6), "float32"), batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ------------------------------------------------------------------ schedules compile, without host synchronisation
COMPILERS = [name for name in ("torch", "jax", "tf") if name in BACKENDS]


def compile_for(name: str, fn: Callable) -> Callable:
    """``fn`` compiled by ``name``'s compiler: a graph break (a host
    synchronisation such as ``.item()``) fails ``torch.compile(fullgraph=True)``,
    a concretisation fails ``jax.jit``, and the ``tf.function`` graph must
    hold no Python callback."""
    b = load(name)
    if name == "torch":
        return b.torch.compile(fn, fullgraph=True, backend="aot_eager")
    if name == "jax":
        return b.jax.jit(fn)
    traced = b.tf.function(fn)

    def call(step: Any) -> Any:
        graph = traced.get_concrete_function(step).graph.as_graph_def()
        assert not {n.op for n in graph.node} & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
        return traced(step)

    return call


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
@pytest.mark.parametrize("name", COMPILERS)
def test_schedules_compile(name, schedule):
    b = load(name)
    step = b.asarray(np.asarray(30, np.int32))
    got = compile_for(name, schedule)(step)
    np.testing.assert_allclose(float(b.to_numpy(got)), schedule(30), rtol=1e-6)
