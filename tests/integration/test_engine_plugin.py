"""The engine with a second model plug-in (``toy_plugin``): training with IAIS, resuming and evaluating
through mining, the loop, checkpoints and the full-ranking evaluation, with nothing of UNITER."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from integrations.retrieval import compute_recalls, score_matrix, train
from integrations.retrieval.evaluation import NonFiniteScoreError

from .toy_plugin import ToyMatcher, ToyPlugin, toy_collate, toy_options

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))


def _brute_force_scores(model: ToyMatcher, pairs) -> torch.Tensor:
    """Every (caption, image) pair scored alone."""
    with torch.no_grad():
        return torch.tensor([[float(model(**toy_collate([pairs.caption(c)], [pairs.image(i)], [0])).logits[0])
                              for i in range(pairs.n_images)] for c in range(pairs.n_captions)])


def _brute_force_recalls(scores: torch.Tensor, gt: list[int], k: int) -> tuple[float, float]:
    """Text->image and image->text R@k by sorting (ties: lower index first)."""
    rows = scores.tolist()
    ir = sum(gt[t] in sorted(range(len(rows[0])), key=lambda j: (-rows[t][j], j))[:k] for t in range(len(rows)))
    tr = sum(any(gt[t] == j for t in sorted(range(len(rows)), key=lambda t: (-rows[t][j], t))[:k])
             for j in range(len(rows[0])))
    return ir / len(rows), tr / len(rows[0])


def test_a_second_plugin_trains_with_iais_and_evaluates_through_the_engine(tmp_path):
    torch.manual_seed(0)
    result = train(toy_options(str(tmp_path)), ToyPlugin())
    assert result.finished and result.step == 4
    assert all(r["iais_image"] > 0 and r["iais_text"] > 0 for r in result.history)
    model = ToyMatcher()
    model.load_state_dict(torch.load(result.model_path, weights_only=True))
    pairs = ToyPlugin().eval_pairs("test")
    brute = _brute_force_scores(model.eval(), pairs)
    torch.testing.assert_close(score_matrix(model, pairs, toy_collate, batch_size=5, progress=False).scores, brute,
                               rtol=1e-5, atol=1e-6)
    for k in (1, 5):
        expected = _brute_force_recalls(brute, pairs.caption_image, k)
        assert (result.test_metrics[f"img_r{k}"], result.test_metrics[f"txt_r{k}"]) == pytest.approx(expected)
    assert compute_recalls(brute, torch.tensor(pairs.caption_image))["rsum"] == pytest.approx(
        result.test_metrics["rsum"])


def test_a_second_plugin_resumes_exactly(tmp_path):
    common = dict(save_steps=1, keep_checkpoints=0, deterministic=True, final_eval=False)
    full = train(toy_options(str(tmp_path / "full"), **common), ToyPlugin())
    cut = train(toy_options(str(tmp_path / "cut"), stop_after=2, **common), ToyPlugin())
    assert cut.stop_reason == "stop_after" and cut.step == 2
    rest = train(toy_options(str(tmp_path / "cut"), resume="auto", **common), ToyPlugin())
    keys = ("loss", "rank_loss", "iais_loss", "lambda", "lr", "grad_norm")
    assert [{k: r[k] for k in keys} for r in cut.history + rest.history] == [{k: r[k] for k in keys}
                                                                             for r in full.history]


def test_the_engine_runs_without_importing_the_uniter_plugin(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "toy_plugin.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "toy.json").read_text())
    assert report["finished"] and report["test_metrics"]["n_captions"] == 12
    assert report["uniter_modules"] == []


def test_logging_every_few_steps_gives_the_same_records_with_fewer_synchronisations(tmp_path, monkeypatch):
    from integrations.retrieval import loop

    flushes = []
    original = loop._Run._flush

    def counting(self, pending):
        flushes.append([p["step"] for p in pending])
        return original(self, pending)

    monkeypatch.setattr(loop._Run, "_flush", counting)
    common = dict(num_train_steps=7, deterministic=True, final_eval=False, save_steps=0)
    every = train(toy_options(str(tmp_path / "every"), **common), ToyPlugin())
    assert flushes == [[s] for s in range(1, 8)]
    flushes.clear()
    grouped = train(toy_options(str(tmp_path / "grouped"), log_steps=3, **common), ToyPlugin())
    assert flushes == [[1, 2, 3], [4, 5, 6], [7]]
    keys = ("step", "loss", "rank_loss", "iais_loss", "iais_image", "iais_text", "lambda", "lr", "grad_norm")
    assert [{k: r[k] for k in keys} for r in grouped.history] == [{k: r[k] for k in keys} for r in every.history]


def test_a_nan_score_names_its_caption_and_image():
    pairs = ToyPlugin().eval_pairs("test")
    pairs.features[3][1, 2] = float("nan")  # image 'i3'
    with pytest.raises(NonFiniteScoreError, match=r"caption 'c0' with image 'i3' as NaN \(12 of 72 pairs, 1 of 6 "
                                                  r"images\)"):
        score_matrix(ToyMatcher(), pairs, toy_collate, progress=False)
