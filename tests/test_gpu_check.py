"""bench/gpu_check.py: its --smoke run goes through every section on the CPU, so the GPU check cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import once_per_session

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _smoke_run(out: Path) -> None:
    proc = _run("--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    (out / "stdout.txt").write_text(proc.stdout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke run's printed tables, JSON and markdown (one run per test session)."""
    out = once_per_session(tmp_path_factory, "gpu_check_smoke", _smoke_run)
    return ((out / "stdout.txt").read_text(), json.loads((out / "gpu_check.json").read_text()),
            (out / "gpu_check.md").read_text())


@pytest.mark.slow
def test_smoke_loss_and_syncs(smoke):
    _, result, _ = smoke
    for name in ("loss", "syncs", "train", "eval", "torchrun"):
        assert "error" not in result[name], result[name]
    loss = result["loss"]
    assert loss["all_agree"] and len(loss["cases"]) == 4  # every mode x anchor at one shape
    for case in loss["cases"]:
        assert case["loop_ms"] > 0 and case["vector_ms"] > 0 and case["loop_over_vector"] > 0
    compiled = [c for c in loss["cases"] if "compiled_ms" in c]
    assert len(compiled) == 1 and compiled[0]["compiled_ms"] > 0 and compiled[0]["compile_s"] > 0
    assert compiled[0]["compiled_agree"] and compiled[0]["loop_over_compiled"] > 0
    syncs = result["syncs"]
    assert syncs["status"] == "skipped: needs CUDA" and syncs["failures"] is None
    assert len(syncs["cases"]) == 12 and syncs["all_ran"]  # every mode x anchor x dtype ran forward+backward


@pytest.mark.slow
def test_smoke_train_eval_torchrun(smoke):
    _, result, _ = smoke
    train = result["train"]["precisions"]
    assert set(train) == {"bf16", "fp32"}
    for summary in train.values():
        assert set(summary["kinds"]) == {"none", "singular"}
        assert all(k["groups_per_s"] > 0 and k["timed_steps"] > 0 for k in summary["kinds"].values())
        assert 0 < summary["overhead_min"] <= summary["overhead_ratio"] <= summary["overhead_max"]
    ev = result["eval"]
    assert ev["pairs"] == 6 * 12 and ev["pairs_per_s"] > 0
    assert set(ev["projected_s"]) == {"Flickr30k 1K x 5K", "COCO 5K x 25K"}
    assert all(s > 0 for s in ev["projected_s"].values())
    run = result["torchrun"]
    assert run["exit_codes"] == [0, 0] and run["resumed_step"] == 3 and run["resume_ok"]
    assert run["steps_first"] == [1, 2, 3] and run["steps_after_resume"] == [1, 2, 3, 4, 5]
    assert run["backend"] == "gloo"  # torchrun with one process still runs in a process group (NCCL on a GPU)


@pytest.mark.slow
def test_smoke_outputs(smoke):
    stdout, result, md = smoke
    assert [t["goal"] for t in result["targets"]][0] == "loss vs per-sample loop >= 30x"
    assert len(result["targets"]) == 5  # loss, syncs, overhead per precision (2), Flickr30k projection
    assert result["environment"]["smoke"] and result["environment"]["torch"]
    assert "| regions | mode | anchor | loop ms |" in md and "| goal | measured |" in md and "Smoke run" in md
    assert md in stdout  # the tables are printed too


def test_without_cuda_is_one_line_error(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    from bench.gpu_check import main

    assert main(["--device", "cpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no CUDA device") and err.count("\n") == 1 and "--smoke" in err
    assert not (tmp_path / "gpu_check.json").exists()
