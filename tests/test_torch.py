"""The PyTorch adapter: autograd, gradcheck, 16-bit inputs, torch.compile,
the module wrapper and the attention-score capture."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import iaisreg
import iaisreg.torch as it
from conftest import COMBOS, MODES, option_defaults, random_layout, signature_defaults


def _case(seed=0, b=3, h=2, n=7, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    roles = np.stack([random_layout(rng, n) for _ in range(b)])
    s = torch.tensor(rng.normal(scale=2.0, size=(b, h, n, n)), dtype=dtype)
    return s, torch.from_numpy(roles == 0), torch.from_numpy(roles == 1), roles


@pytest.mark.parametrize("mode,anchor,variant", COMBOS)
def test_extreme_logits_finite_values_and_gradients(mode, anchor, variant):
    g = torch.Generator().manual_seed(5)
    s = (torch.randint(0, 2, (2, 3, 8, 8), generator=g) * 2 - 1).double() * 1e4
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        x = s.to(dtype).detach().clone().requires_grad_(True)
        loss = it.iais(x, 3, mode=mode, anchor=anchor, variant=variant)
        loss.backward()
        assert torch.isfinite(loss), (dtype, loss)
        assert torch.isfinite(x.grad).all(), dtype


def test_module_and_schedule():
    s, t, v, _ = _case(7)
    crit = it.IAISLoss(mode="distributed", anchor="L", schedule="exp", total_steps=100, gamma=5.0)
    base = it.iais(s, text_mask=t, image_mask=v, mode="distributed", anchor="L")
    torch.testing.assert_close(crit(s, text_mask=t, image_mask=v, step=50), base * np.exp(-2.5))
    torch.testing.assert_close(crit(s, text_mask=t, image_mask=v), base)
    assert "distributed" in repr(crit)
    assert crit.options == {**option_defaults(), "mode": "distributed", "anchor": "L"}
    assert signature_defaults(it.IAISLoss, iaisreg.OPTIONS) == option_defaults()
    with pytest.raises(ValueError, match="'mode' must be one of"):
        it.IAISLoss(mode="nope")
    with pytest.raises(ValueError, match="total_steps"):
        it.IAISLoss(schedule="exp")


def test_type_errors():
    with pytest.raises(TypeError, match="'attn' must be a torch.Tensor; got ndarray"):
        it.iais(np.zeros((1, 4, 4)), 2)


def _compiled_case():
    s, t, v, _ = _case(8, b=2, h=2, n=8, dtype=torch.float32)
    return s, t, v


@pytest.mark.parametrize("mode", MODES)
def test_torch_compile_fullgraph(mode):
    torch._dynamo.reset()
    s, t, v = _compiled_case()

    def f(x, tm, vm):
        return it.iais(x, text_mask=tm, image_mask=vm, mode=mode, anchor="both")

    eager = f(s, t, v)
    compiled = torch.compile(f, fullgraph=True, dynamic=False)
    got = compiled(s, t, v)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-6)
    x = s.clone().requires_grad_(True)
    compiled(x, t, v).backward()
    y = s.clone().requires_grad_(True)
    f(y, t, v).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-6)


def test_torch_compile_with_lengths():
    torch._dynamo.reset()
    s, _, _ = _compiled_case()
    lens = torch.tensor([3, 5])
    f = lambda x, n: it.iais(x, n, mode="singular", anchor="V")  # noqa: E731
    torch.testing.assert_close(torch.compile(f, fullgraph=True, dynamic=False)(s, lens), f(s, lens))


def test_score_capture_matches_eager_attention():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  vocab_size=50, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 50, (2, 7))
    with it.ScoreCapture(model, layer=-1) as cap:
        out = model(ids, output_attentions=True)
    probs = out.attentions[-1]
    torch.testing.assert_close(torch.softmax(cap.scores, -1), probs, rtol=1e-5, atol=1e-6)
    # the loss on captured scores equals the loss on the probabilities, and trains the layer
    loss = it.iais(cap.scores, 3)
    torch.testing.assert_close(loss, it.iais(probs, 3, inputs="probs"), rtol=1e-4, atol=1e-6)
    loss.backward()
    assert model.encoder.layer[-1].attention.self.query.weight.grad.abs().sum() > 0
    assert model.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0  # flows through earlier layers
    with pytest.raises(ValueError, match="'layer' must index"):
        it.ScoreCapture(model, layer=5)
    with pytest.raises(ValueError, match="no self-attention module"):
        it.ScoreCapture(torch.nn.Linear(2, 2))


def test_score_capture_with_sdpa_model():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                  vocab_size=50, attn_implementation="sdpa")
    model = transformers.BertModel(cfg).eval()
    cap = it.ScoreCapture(model)
    model(torch.randint(0, 50, (1, 5)))
    cap.remove()
    assert cap.scores.shape == (1, 4, 5, 5) and torch.isfinite(cap.scores).all()
