"""``python -m integrations.vilt.evaluate``: full-ranking recalls equal brute-force pair-by-pair scoring with
``ViltForImageAndTextRetrieval`` itself, in any batching, and sharded under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from integrations.vilt import evaluate
from integrations.vilt.data import read_karpathy

from . import helpers as H
from .vilt_builders import MAX_TEXT_LEN, hf_pair_logits


def _args(world, out_dir, *extra) -> list[str]:
    return ["--model", world["model"], "--karpathy-json", world["karpathy"], "--image-root", world["images"],
            "--max-text-len", str(MAX_TEXT_LEN), "--output", str(out_dir / "results.json"), "--save-scores",
            str(out_dir / "scores.pt"), "--no-progress", *extra]


@pytest.fixture(scope="module")
def brute(vilt_world):
    """Every (caption, image) pair of the test split scored alone by plain ViLT on the processor's output."""
    entries = [e for e in read_karpathy(vilt_world["karpathy"]) if e.split == "test"]
    captions = [(c, i) for i, e in enumerate(entries) for c in e.captions]
    files = [f"{vilt_world['images']}/{e.path}" for e in entries]
    logits = torch.tensor(hf_pair_logits(vilt_world["model"], [(f, c) for c, _ in captions for f in files]))
    matrix = logits.view(len(captions), len(files))
    for dim in (0, 1):  # no near-tie in a row or a column: the recalls below do not hang on rounding
        assert matrix.sort(dim).values.diff(dim=dim).min() > 1e-4
    return matrix, [i for _, i in captions]


@pytest.mark.parametrize("batch_size", ["7", "64"])
def test_recalls_equal_brute_force_pair_by_pair_scoring(vilt_world, brute, tmp_path, capsys, batch_size):
    scores, gt = brute
    assert evaluate.main(_args(vilt_world, tmp_path, "--batch-size", batch_size)) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    saved = torch.load(tmp_path / "scores.pt", weights_only=False)
    torch.testing.assert_close(saved["scores"], scores, rtol=1e-5, atol=1e-6)
    expected = H.brute_force_recalls(scores, list(range(len(gt))), list(range(scores.shape[1])),
                                     dict(enumerate(gt)))
    for key, value in expected.items():
        assert report["metrics"][key] == pytest.approx(value), key
    assert report["n_captions"] == 10 and report["n_images"] == 5 and report["world_size"] == 1
    assert json.loads(capsys.readouterr().out)["metrics"] == report["metrics"]


def test_each_image_is_read_once_and_embedded_once_per_batch(vilt_world, tmp_path, monkeypatch, capsys):
    from integrations.vilt.data import ViltPairs
    from integrations.vilt.model import ViltRetrieval

    loaded, embedded = [], []
    load_image, embed_images = ViltPairs.load_image, ViltRetrieval.embed_images
    monkeypatch.setattr(ViltPairs, "load_image", lambda self, i: loaded.append(i) or load_image(self, i))
    monkeypatch.setattr(ViltRetrieval, "embed_images",
                        lambda self, pixels, mask: embedded.append(len(pixels)) or embed_images(self, pixels, mask))
    assert evaluate.main(_args(vilt_world, tmp_path, "--batch-size", "64")) == 0  # 50 pairs: one batch
    assert sorted(loaded) == list(range(5)) and embedded == [5]
    loaded.clear(), embedded.clear()
    assert evaluate.main(_args(vilt_world, tmp_path, "--batch-size", "10")) == 0  # one image's 10 captions a batch
    assert sorted(loaded) == list(range(5)) and embedded == [1] * 5


def test_the_val_split_and_an_empty_split(vilt_world, tmp_path, capsys):
    assert evaluate.main(_args(vilt_world, tmp_path, "--split", "val")) == 0
    assert json.loads((tmp_path / "results.json").read_text())["n_images"] == 3
    capsys.readouterr()
    karpathy = tmp_path / "only_train.json"
    data = json.loads(open(vilt_world["karpathy"]).read())
    karpathy.write_text(json.dumps({"images": [e for e in data["images"] if e["split"] == "train"]}))
    assert evaluate.main(_args({**vilt_world, "karpathy": str(karpathy)}, tmp_path)) == 2
    assert "has no image in split 'test'" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(vilt_world, brute, tmp_path):
    scores, _ = brute
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "integrations.vilt.evaluate", *_args(vilt_world, tmp_path, "--batch-size", "6")]
    proc = subprocess.run(cmd, cwd=H.REPO_ROOT, env=H.subprocess_env(), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["world_size"] == 2
    torch.testing.assert_close(torch.load(tmp_path / "scores.pt", weights_only=False)["scores"], scores,
                               rtol=1e-5, atol=1e-6)
