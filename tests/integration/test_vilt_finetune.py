"""``python -m integrations.vilt.finetune`` on the toy ViLT: runs with and without IAIS, the IAIS term's
gradient on the last layer's query/key weights (checked against plain ``ViltForImageAndTextRetrieval``),
exact resume, the recipe config, usage errors and two processes under torchrun."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

import iaisreg.torch as iais_torch
from integrations.retrieval.mining import make_group, mine_hard_negatives
from integrations.retrieval.objective import Objective
from integrations.retrieval.sampling import HardNegativeSampler, prepare
from integrations.vilt import finetune
from integrations.vilt.config import ViltData
from integrations.vilt.plugin import ViltPlugin

from . import helpers as H
from .vilt_builders import MAX_TEXT_LEN, hf_pair_logits

RECIPE = os.path.join(H.REPO_ROOT, "integrations", "vilt", "configs", "flickr30k.json")


def train_args(world, out_dir, **overrides) -> list[str]:
    opts = {"--model": world["model"], "--karpathy-json": world["karpathy"], "--image-root": world["images"],
            "--max-text-len": MAX_TEXT_LEN, "--output-dir": str(out_dir), "--num-train-steps": 3,
            "--train-batch-size": 1, "--negative-size": 4, "--hard-neg-size": 2, "--inf-minibatch-size": 8,
            "--learning-rate": 1e-3, "--warmup-steps": 1, "--valid-steps": 1000, "--n-workers": 0,
            "--iais": "singular", "--save-steps": 0, "--threads": 1}
    opts.update({"--" + k.replace("_", "-"): v for k, v in overrides.items()})
    args = [x for k, v in opts.items() if v is not None for x in ((k,) if v is True else (k, str(v)))]
    return args + ["--no-progress", "--quiet"]


@pytest.mark.parametrize("iais", ["singular", "none"])
def test_finetunes_with_and_without_iais_and_evaluates(vilt_world, tmp_path, iais):
    """With IAIS in float32 and TensorBoard; without it under bf16 autocast (the CPU's AMP)."""
    precision = "fp32" if iais == "singular" else "bf16"
    status, result = finetune.run(train_args(vilt_world, tmp_path, iais=iais, tensorboard=iais == "singular",
                                             precision=precision))
    assert status == 0 and result.finished and result.step == 3
    assert all(torch.isfinite(torch.tensor(r["rank_loss"])) for r in result.history)
    if iais == "singular":
        assert all(r["iais_image"] > 0 and r["iais_text"] > 0 and r["lambda"] > 0 for r in result.history)
        assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "log"))
    else:
        assert all(r["iais_loss"] == 0 and r["lambda"] == 0 for r in result.history)
    saved = json.loads((tmp_path / "results" / "test_metrics.json").read_text())
    assert saved["iais"] == iais and saved["metrics"]["n_captions"] == 10 and saved["metrics"]["n_images"] == 5
    hps = json.loads((tmp_path / "log" / "hps.json").read_text())
    assert hps["plugin"]["model"] == "vilt" and hps["plugin"]["data"]["max_text_len"] == MAX_TEXT_LEN
    assert hps["precision"] == precision


def test_iais_moves_the_last_layers_query_key_weights_and_nothing_it_cannot_reach(vilt_world, tmp_path):
    """One step from the same start: with IAIS the last layer's query/key weights move differently; the weights
    after the scores (value, attention output, pooler, rank_output) get the margin loss's gradient only, so they
    end the same (no clipping: --grad-norm 0)."""
    states = {}
    for iais in ("none", "singular"):
        status, result = finetune.run(train_args(vilt_world, tmp_path / iais, iais=iais, num_train_steps=1,
                                                 grad_norm=0, final_eval=False, iais_schedule="constant"))
        assert status == 0
        states[iais] = torch.load(result.model_path, weights_only=True)
    last = "model.vilt.encoder.layer.1.attention."
    for key in (last + "attention.query.weight", last + "attention.key.weight"):
        assert not torch.allclose(states["none"][key], states["singular"][key])
    for key in (last + "attention.value.weight", last + "output.dense.weight", "model.vilt.pooler.dense.weight",
                "model.rank_output.weight"):
        torch.testing.assert_close(states["none"][key], states["singular"][key], rtol=0, atol=0)


def _group(plugin, model):
    pairs = plugin.train_pairs(image_cache=0)
    sampler = HardNegativeSampler(pairs, negative_size=3, seed=0)
    prepared = prepare(pairs, sampler.next("image"))
    rows = mine_hard_negatives(model, prepared, plugin.collate, hard_neg_size=2, chunk_size=8,
                               device=torch.device("cpu"))
    return pairs, make_group(prepared, rows, plugin.collate, torch.device("cpu"))


def _query_key_grads(module) -> torch.Tensor:
    attention = module.vilt.encoder.layer[-1].attention.attention
    return torch.cat([attention.query.weight.grad.flatten(), attention.key.weight.grad.flatten()])


def _reference_loss(hf, processor, pairs, group, *, iais: bool) -> torch.Tensor:
    """The objective written on plain ViltForImageAndTextRetrieval: each row scored alone on the processor's
    output; IAIS on the log of ViLT's own attention probabilities of the positive (a softmax of the scores
    shifted per row, which block softmaxes ignore); text items: positions 1..n, image items: every patch."""
    from PIL import Image

    logits, attention = [], None
    for k, (c, i) in enumerate(zip(group.captions, group.images)):
        inputs = processor(images=Image.open(pairs.image_path(i)).convert("RGB"), text=pairs.texts[c],
                           padding="max_length", max_length=MAX_TEXT_LEN, return_tensors="pt")
        out = hf(**inputs, output_attentions=k == 0)
        logits.append(out.logits[0, 0])
        if k == 0:
            attention, n_words = out.attentions[-1], int(inputs["attention_mask"].sum()) - 2
    scores = torch.sigmoid(torch.stack(logits))
    loss = torch.clamp(0.2 + scores[1:] - scores[0], min=0).mean()
    if iais:
        n = attention.shape[-1]
        pos = torch.arange(n)
        text, image = (pos >= 1) & (pos <= n_words), pos > MAX_TEXT_LEN
        loss = loss + iais_torch.iais(attention.clamp_min(1e-30).log(), text_mask=text[None], image_mask=image[None],
                                      mode="singular", anchor="V")
    return loss


def test_the_iais_term_adds_its_gradient_to_the_last_layers_query_key_weights(vilt_world):
    plugin = ViltPlugin(ViltData(model=vilt_world["model"], karpathy_json=vilt_world["karpathy"],
                                 image_root=vilt_world["images"], max_text_len=MAX_TEXT_LEN))
    model = plugin.build_model(dropout=0.0)
    pairs, group = _group(plugin, model)
    hf = copy.deepcopy(model.model)
    grads = {}
    for mode in ("none", "singular"):
        objective = Objective(iais=mode, variant="official", anchor="policy", schedule=lambda step: 1.0, weight=1.0,
                              margin=0.2, accumulation=1, iais_scale=1.0)
        model.zero_grad()
        out = model(**group.batch, scores_rows=torch.zeros(1, dtype=torch.long))
        objective(out, "image", 1.0).total.backward()
        hf.zero_grad()
        _reference_loss(hf, plugin.processor, pairs, group, iais=mode != "none").backward()
        grads[mode] = _query_key_grads(model.model)
        torch.testing.assert_close(grads[mode], _query_key_grads(hf), rtol=1e-4, atol=1e-7)
    assert (grads["singular"] - grads["none"]).norm() > 0.01 * grads["none"].norm()


def test_resume_continues_exactly(vilt_world, tmp_path):
    # Same data, random streams and optimizer state after the resume; the sums of
    # the CPU's matrix kernels may still round differently in the last bit (their
    # blocking can depend on where a buffer lies), so the figures agree to float
    # rounding, far below what a wrong data order or state would change.
    common = dict(num_train_steps=4, save_steps=1, keep_checkpoints=0, deterministic=True, final_eval=False)
    full = finetune.run(train_args(vilt_world, tmp_path / "full", **common))[1]
    status, cut = finetune.run(train_args(vilt_world, tmp_path / "cut", stop_after=2, **common))
    assert status == 0 and cut.stop_reason == "stop_after" and cut.step == 2
    rest = finetune.run(train_args(vilt_world, tmp_path / "cut", resume="auto", **common))[1]
    keys = ("loss", "rank_loss", "iais_loss", "lambda", "lr", "grad_norm")
    resumed = [[r[k] for k in keys] for r in cut.history + rest.history]
    assert [r["step"] for r in cut.history + rest.history] == [r["step"] for r in full.history] == [1, 2, 3, 4]
    torch.testing.assert_close(torch.tensor(resumed, dtype=torch.float64),
                               torch.tensor([[r[k] for k in keys] for r in full.history], dtype=torch.float64),
                               rtol=1e-5, atol=1e-7)
    final = {n: torch.load(tmp_path / d / "ckpt" / "model_step_4_final.pt", weights_only=True) for n, d in
             (("full", "full"), ("cut", "cut"))}
    assert final["full"].keys() == final["cut"].keys()
    torch.testing.assert_close(final["cut"], final["full"], rtol=1e-5, atol=1e-6)


def test_the_finetuned_weights_score_like_plain_vilt(vilt_world, tmp_path):
    """The saved weights load into ViltForImageAndTextRetrieval and score pairs as the run's model does."""
    status, result = finetune.run(train_args(vilt_world, tmp_path, num_train_steps=2, final_eval=False))
    state = torch.load(result.model_path, weights_only=True)
    plugin = ViltPlugin(ViltData(model=vilt_world["model"], karpathy_json=vilt_world["karpathy"],
                                 image_root=vilt_world["images"], max_text_len=MAX_TEXT_LEN))
    model = plugin.build_model(checkpoint=result.model_path).eval()
    pairs = plugin.eval_pairs("val")
    batch = plugin.collate([pairs.caption(c) for c in range(3)], [pairs.image(0), pairs.image(1)], [0, 1, 1])
    with torch.no_grad():
        mine = model(**batch).logits
    ref = hf_pair_logits(vilt_world["model"], [(pairs.image_path(i), pairs.texts[c]) for c, i in
                                               ((0, 0), (1, 1), (2, 1))], state_dict=state)
    torch.testing.assert_close(mine, torch.tensor(ref), rtol=1e-5, atol=1e-6)


def test_the_recipe_config_of_the_docs_is_read(vilt_world, tmp_path):
    opts, plugin = finetune.parse(["--config", RECIPE, "--model", vilt_world["model"], "--karpathy-json",
                                   vilt_world["karpathy"], "--image-root", vilt_world["images"], "--output-dir",
                                   str(tmp_path), "--max-text-len", str(MAX_TEXT_LEN)])
    assert (opts.learning_rate, opts.weight_decay, opts.warmup_steps, opts.num_train_steps) == (1e-4, 0.01, 500, 5000)
    assert plugin.data.max_image_length == -1 and plugin.data.max_text_len == MAX_TEXT_LEN


def test_usage_errors_exit_with_status_2(vilt_world, tmp_path, capsys):
    args = train_args(vilt_world, tmp_path)
    for drop, message in (("--model", "missing --model"), ("--image-root", "missing --image-root")):
        i = args.index(drop)
        with pytest.raises(SystemExit) as exit_:
            finetune.main(args[:i] + args[i + 2:])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        finetune.main(train_args(vilt_world, tmp_path, max_text_len=41))
    assert exit_.value.code == 2 and "--max-text-len 41 (max_text_len) exceeds the model's max_position_embeddings " \
        "16" in capsys.readouterr().err
    assert finetune.main(train_args(vilt_world, tmp_path, train_splits="nosuch")) == 2
    assert "error: " in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_torchrun_with_gloo(vilt_world, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "integrations.vilt.finetune", *train_args(vilt_world, tmp_path, num_train_steps=2, num_gpus_equivalent=2)]
    proc = subprocess.run(cmd, cwd=H.REPO_ROOT, env=H.subprocess_env(), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hps = json.loads((tmp_path / "log" / "hps.json").read_text())
    assert hps["world_size"] == 2 and hps["accumulation"] == 1
    assert [r["step"] for r in H.read_trace(tmp_path)] == [1, 2]
    assert json.loads((tmp_path / "results" / "test_metrics.json").read_text())["metrics"]["n_captions"] == 10
