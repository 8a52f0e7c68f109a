"""End-to-end runs of ``python -m integrations.uniter.finetune`` on tiny generated databases."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from . import helpers as H

from integrations.retrieval import checkpoint as ckpt
from integrations.retrieval import objective
from integrations.retrieval.sampling import HardNegativeSampler
from integrations.uniter import finetune
from integrations.uniter.config import UniterModelConfig
from integrations.uniter.model import UniterForRetrieval, load_checkpoint

TRACE_KEYS = ("loss", "rank_loss", "iais_loss", "iais_image", "iais_text", "lambda", "lr", "grad_norm")


def _run(args):
    rc, result = finetune.run(args)
    return rc, result


# ------------------------------------------------------------------ training


def test_a_few_steps_fit_a_fixed_small_set_with_iais_in_both_directions(data, tmp_path, monkeypatch):
    seen = []
    original_next = HardNegativeSampler.next

    def spy(self, direction):
        seen.append((id(self), direction))
        return original_next(self, direction)

    monkeypatch.setattr(HardNegativeSampler, "next", spy)
    # 5 pairs, every group = a positive and the 4 other images / captions: a fixed set to fit
    rc, result = _run(H.train_args(data, tmp_path, split="small", steps=80, train_batch_size=1, negative_size=4,
                                   hard_neg_size=4, dropout=0.0, no_final_eval=True))
    assert rc == 0 and result.finished and result.step == 80
    trace = H.read_trace(tmp_path)
    assert [r["step"] for r in trace] == list(range(1, 81))
    main_sampler = seen[0][0]  # the loop's own (the data stream runs a copy in lockstep)
    assert [d for i, d in seen if i == main_sampler] == ["image", "text"] * 80  # from image first
    first = sum(r["rank_loss"] for r in trace[:10]) / 10
    last = sum(r["rank_loss"] for r in trace[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    lambdas = [r["lambda"] for r in trace]
    assert lambdas == sorted(lambdas) and lambdas[0] == pytest.approx(math.exp(-5))
    for r in trace:  # the IAIS term is there, finite and positive, for both directions
        assert all(math.isfinite(r[k]) for k in TRACE_KEYS)
        assert r["iais_image"] > 0 and r["iais_text"] > 0


def test_iais_is_weighted_by_lambda_and_not_divided_by_the_accumulation(data, tmp_path):
    rc, result = _run(H.train_args(data, tmp_path, steps=3, train_batch_size=3, no_final_eval=True))
    assert rc == 0
    trace = H.read_trace(tmp_path)
    schedule = [math.exp((s / 3 - 1) * 5) for s in range(3)]  # exp schedule at steps 0, 1, 2
    for r, lam in zip(trace, schedule):
        assert r["lambda"] == pytest.approx(lam)
        # 3 micro-steps x 2 groups: sum of (rank / 3 + lambda * iais)
        assert r["loss"] == pytest.approx(6 * (r["rank_loss"] / 3 + lam * r["iais_loss"]), rel=1e-6)
        assert r["iais_loss"] == pytest.approx((r["iais_image"] + r["iais_text"]) / 2, rel=1e-6)


def test_anchor_policy_is_v_for_image_groups_and_l_for_text_groups(data, tmp_path, monkeypatch):
    anchors = []
    original = objective.iais_term

    def spy(out, *, mode, anchor, variant):
        anchors.append((anchor, mode, variant, out.scores.shape[0]))
        return original(out, mode=mode, anchor=anchor, variant=variant)

    monkeypatch.setattr(objective, "iais_term", spy)
    rc, _ = _run(H.train_args(data, tmp_path, steps=2, iais="distributed", iais_variant="paper",
                              no_final_eval=True))
    assert rc == 0
    assert anchors == [("V", "distributed", "paper", 1), ("L", "distributed", "paper", 1)] * 4
    anchors.clear()
    rc, _ = _run(H.train_args(data, tmp_path / "b", steps=1, iais_anchor="both", no_final_eval=True))
    assert {a[0] for a in anchors} == {"both"}


def test_outputs_validation_test_metrics_and_tensorboard(data, tmp_path, capsys):
    multi = data["multi"]
    args = H.train_args(data, tmp_path, steps=4, valid_steps=2, val_txt_db=multi.txt_db, val_img_db=multi.img_db,
                        test_txt_db=multi.txt_db, test_img_db=multi.img_db, save_steps=2)
    args = [a for a in args if a not in ("--no-tensorboard", "--quiet")]
    rc, result = _run(args)
    assert rc == 0
    names = set(os.listdir(tmp_path / "ckpt"))
    assert {"train_step_0000002.pt", "train_step_0000004.pt", "model_step_2.pt", "model_step_4_final.pt"} <= names
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "log"))
    hps = json.loads((tmp_path / "log" / "hps.json").read_text())
    assert hps["options"]["num_train_steps"] == 4 and hps["options"]["iais"] == "singular"
    saved = json.loads((tmp_path / "results" / "test_metrics.json").read_text())
    assert saved["metrics"] == result.test_metrics and saved["step"] == 4
    assert set(result.val_metrics) >= {"img_r1", "txt_r10", "rsum"}
    out = capsys.readouterr().out
    assert "text -> image" in out and "RSUM" in out
    # the final weights are a plain state dict that the evaluation loads as a fine-tuned checkpoint
    model = UniterForRetrieval(UniterModelConfig.from_dict(H.FT_MODEL), img_dim=H.FT_IMG_DIM)
    report = load_checkpoint(model, result.model_path)
    assert not report.rank_output_from_itm and not report.missing


def test_starts_from_a_pretraining_checkpoint_and_runs_in_bf16(data, tmp_path, caplog):
    """A released-style checkpoint (float16, no rank_output): rank_output starts as itm_output row 1."""
    torch.manual_seed(0)
    model = UniterForRetrieval(UniterModelConfig.from_dict(H.FT_MODEL), img_dim=H.FT_IMG_DIM)
    state = {k: v.half() for k, v in model.state_dict().items() if not k.startswith("rank_output.")}
    torch.save(state, tmp_path / "pretrained.pt")
    with caplog.at_level("INFO", logger="integrations.uniter"):
        rc, result = _run(H.train_args(data, tmp_path / "run", steps=2, checkpoint=tmp_path / "pretrained.pt",
                                       precision="bf16", no_final_eval=True))
    assert rc == 0 and result.finished
    assert "rank_output initialised from itm_output" in caplog.text
    trace = H.read_trace(tmp_path / "run")
    assert all(math.isfinite(r["loss"]) and r["iais_loss"] > 0 for r in trace)
    hps = json.loads((tmp_path / "run" / "log" / "hps.json").read_text())
    assert hps["precision"] == "bf16"


def test_original_flickr_config_with_iais_singular_starts_a_run(data, tmp_path):
    """The released config file, keys and values as shipped, with only the paths pointed at test data."""
    path = H.released_config(data, tmp_path, output_dir=str(tmp_path / "run"))
    proc = H.run_module(["--config", str(path), "--iais", "singular", "--num-train-steps", "2",
                         "--num-gpus-equivalent", "1", "--set", "max_bb=8", "--set", "min_bb=2", "--no-progress",
                         "--no-final-eval"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trace = H.read_trace(tmp_path / "run")
    assert [r["step"] for r in trace] == [1, 2]
    assert all(r["iais_loss"] > 0 for r in trace)
    hps = json.loads((tmp_path / "run" / "log" / "hps.json").read_text())
    assert hps["options"]["iais"] == "singular" and hps["precision"] == "fp32"  # fp16: true -> fp32 on CPU
    assert hps["accumulation"] == 8 and hps["options"]["n_workers"] == 4  # 4 data workers were used
    assert "negative_size=399 but only 11 images" in proc.stderr  # both capped, each said once
    assert proc.stderr.count("negative_size=399 but only 33 captions") == 1


def test_a_released_8_gpu_config_on_one_process_keeps_the_batch_of_8_gpus(data, tmp_path):
    """No --num-gpus-equivalent: the count in the file name (8) is used, and one log line names 8 and 1."""
    path = H.released_config(data, tmp_path, output_dir=str(tmp_path / "run"), negative_size=3, hard_neg_size=1,
                             n_workers=0)
    proc = H.run_module(["--config", str(path), "--num-train-steps", "1", "--set", "max_bb=8", "--set", "min_bb=2",
                         "--no-progress", "--no-final-eval", "--no-tensorboard", "--threads", "1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    hps = json.loads((tmp_path / "run" / "log" / "hps.json").read_text())
    assert hps["world_size"] == 1 and hps["num_gpus_equivalent"] == 8 and hps["accumulation"] == 64
    lines = [line for line in proc.stderr.splitlines() if "num_gpus_equivalent 8 on 1 process" in line]
    assert len(lines) == 1 and "64 micro-steps" in lines[0] and "--num-gpus-equivalent 1" in lines[0]


def test_dry_run_checks_without_writing_and_plans_a_resume(data, tmp_path, capsys):
    rc, result = _run(H.train_args(data, tmp_path / "new", steps=3, dry_run=True))
    out = capsys.readouterr().out
    assert rc == 0 and result is None and not (tmp_path / "new").exists()
    assert "fresh start" in out and "3 updates" in out and "IAIS singular" in out and "layout:    clean" in out
    assert _run(H.train_args(data, tmp_path / "old", steps=1, no_final_eval=True))[0] == 0
    before = sorted(p.name for p in (tmp_path / "old").rglob("*"))
    assert _run(H.train_args(data, tmp_path / "old", steps=3, dry_run=True))[0] == 2
    assert "--resume auto" in capsys.readouterr().err  # the run would refuse the directory: so does its dry run
    rc, _ = _run(H.train_args(data, tmp_path / "old", steps=3, dry_run=True, resume="auto"))
    out = capsys.readouterr().out
    assert rc == 0 and "resumes from" in out and "train_step_0000001.pt" in out
    assert sorted(p.name for p in (tmp_path / "old").rglob("*")) == before  # nothing written
    rc, _ = _run(H.train_args(data, tmp_path / "x", steps=1, dry_run=True, precision="fp16"))
    assert rc == 2 and "fp16 needs a CUDA device" in capsys.readouterr().err
    rc, _ = _run(H.train_args(data, tmp_path / "x", steps=1, dry_run=13, num_gpus_equivalent=13))
    assert rc == 2 and "rank 12 of 13 owns no training caption" in capsys.readouterr().err  # 12 images


def test_config_iais_key_of_the_authors_fork_selects_the_mode(data, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"IAIS": "distributed", "model_config": data["model_config"],
                                "output_dir": str(tmp_path), "train_txt_dbs": ["x"], "train_img_dbs": ["y"]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the key is understood, not "unknown"
        assert finetune.parse(["--config", str(path)])[0].iais == "distributed"
    assert finetune.parse(["--config", str(path), "--iais", "none"])[0].iais == "none"
    path.write_text(json.dumps({"IAIS": False, "model_config": data["model_config"], "output_dir": str(tmp_path),
                                "train_txt_dbs": ["x"], "train_img_dbs": ["y"], "seed": 7}))
    opts, plugin = finetune.parse(["--config", str(path)])
    assert opts.iais == "none" and opts.seed == 7 and plugin.data.train_txt_dbs == ["x"]


def test_flags_override_set_which_overrides_the_config(data, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model_config": data["model_config"], "output_dir": str(tmp_path),
                                "train_txt_dbs": ["x"], "train_img_dbs": ["y"], "seed": 7, "margin": 0.3,
                                "max_bb": 50}))
    opts, plugin = finetune.parse(["--config", str(path), "--set", "seed=8", "--set", "margin=0.4",
                                   "--margin", "0.5", "--max-bb", "60"])
    assert (opts.seed, opts.margin, plugin.data.max_bb) == (8, 0.5, 60)
    assert opts.negative_size == 399  # the recipe's default where neither says otherwise


# ------------------------------------------------------------------ never lose work


@pytest.mark.slow
def test_resume_after_a_stop_at_a_random_step_equals_the_uninterrupted_run(data, tmp_path):
    steps = 7
    common = dict(steps=steps, save_steps=1, keep_checkpoints=0, deterministic=True, no_final_eval=True)
    rc, _ = _run(H.train_args(data, tmp_path / "full", **common))
    assert rc == 0
    full = H.read_trace(tmp_path / "full")
    stop = random.Random(os.getpid()).randint(1, steps - 1)
    rc, result = _run(H.train_args(data, tmp_path / "cut", stop_after=stop, **common))
    assert rc == 0 and result.stop_reason == "stop_after" and result.step == stop
    rc, result = _run(H.train_args(data, tmp_path / "cut", resume="auto", **common))
    assert rc == 0 and result.finished
    resumed = H.read_trace(tmp_path / "cut")
    assert [r["step"] for r in resumed] == list(range(1, steps + 1))
    for a, b in zip(full, resumed):
        assert {k: a[k] for k in TRACE_KEYS} == {k: b[k] for k in TRACE_KEYS}, (stop, a["step"])
    # resuming from an older checkpoint (explicit path) drops the later log records and replays them
    older = ckpt.checkpoint_path(str(tmp_path / "cut" / "ckpt"), 2)
    rc, _ = _run(H.train_args(data, tmp_path / "cut", resume=older, **common))
    again = H.read_trace(tmp_path / "cut")
    assert rc == 0 and [{k: r[k] for k in TRACE_KEYS} for r in again] == [{k: r[k] for k in TRACE_KEYS}
                                                                           for r in full]


def test_settings_that_cannot_work_are_usage_errors(data, tmp_path, capsys):
    assert _run(H.train_args(data, tmp_path / "a", steps=1, precision="fp16"))[0] == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err
    assert _run(H.train_args(data, tmp_path / "b", steps=1, train_batch_size=3, num_gpus_equivalent=2))[0] == 0
    with pytest.raises(SystemExit) as exc:
        _run(H.train_args(data, tmp_path / "c", steps=1, model_config=tmp_path / "missing.json"))
    assert exc.value.code == 2 and "model config not found" in capsys.readouterr().err


def test_output_dir_with_checkpoints_needs_resume_or_overwrite(data, tmp_path, capsys):
    assert _run(H.train_args(data, tmp_path, steps=1, no_final_eval=True))[0] == 0
    rc, _ = _run(H.train_args(data, tmp_path, steps=2, no_final_eval=True))
    assert rc == 2 and "--resume auto" in capsys.readouterr().err
    rc, result = _run(H.train_args(data, tmp_path, steps=2, no_final_eval=True, overwrite=True))
    assert rc == 0 and result.step == 2 and [r["step"] for r in H.read_trace(tmp_path)] == [1, 2]
    rc, result = _run(H.train_args(data, tmp_path / "fresh", steps=1, no_final_eval=True, resume="auto"))
    assert rc == 0 and result.step == 1  # nothing to resume: a fresh start


def test_sigint_saves_a_checkpoint_at_the_step_boundary(data, tmp_path, monkeypatch):
    calls = []
    original = objective.rank_loss

    def interrupt_in_step_2(logits, margin):
        calls.append(1)
        if len(calls) == 3:  # first group of step 2
            os.kill(os.getpid(), signal.SIGINT)
        return original(logits, margin)

    monkeypatch.setattr(objective, "rank_loss", interrupt_in_step_2)
    rc, result = _run(H.train_args(data, tmp_path, steps=50, train_batch_size=1, no_final_eval=True))
    assert rc == 0 and result.stop_reason == "signal" and result.step == 2
    assert H.checkpoints(tmp_path) == ["train_step_0000002.pt"]
    assert ckpt.load_training_checkpoint(result.checkpoint)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data, tmp_path):
    args = H.train_args(data, tmp_path, steps=100000, train_batch_size=1, no_final_eval=True)
    proc = subprocess.Popen([sys.executable, "-m", "integrations.uniter.finetune", *args], cwd=H.REPO_ROOT,
                            env=H.subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log" / "train_log.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM" in err
    last = H.read_trace(tmp_path)[-1]["step"]
    assert H.checkpoints(tmp_path) == [f"train_step_{last:07d}.pt"]
    state = ckpt.load_training_checkpoint(str(tmp_path / "ckpt" / f"train_step_{last:07d}.pt"))
    assert state["step"] == last and len(state["rank_states"]) == 1
    assert not [n for n in os.listdir(tmp_path / "ckpt") if n.endswith(".tmp")]


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch, capsys):
    calls = []
    original = ckpt._serialize

    def crash_on_third_save(obj, handle):
        calls.append(1)
        if len(calls) == 3:
            handle.write(b"\x80\x02partial checkpoint")
            handle.flush()
            raise OSError("No space left on device")
        return original(obj, handle)

    monkeypatch.setattr(ckpt, "_serialize", crash_on_third_save)
    rc, _ = _run(H.train_args(data, tmp_path, steps=5, save_steps=1, keep_checkpoints=0, no_final_eval=True))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.endswith("train_step_0000003.pt: No space left on device") and "Traceback" not in err
    assert H.checkpoints(tmp_path) == ["train_step_0000001.pt", "train_step_0000002.pt"]
    assert not [n for n in os.listdir(tmp_path / "ckpt") if n.endswith(".tmp")]
    assert ckpt.load_training_checkpoint(str(tmp_path / "ckpt" / "train_step_0000002.pt"))["step"] == 2
    monkeypatch.setattr(ckpt, "_serialize", original)
    rc, result = _run(H.train_args(data, tmp_path, steps=5, save_steps=1, keep_checkpoints=0, no_final_eval=True,
                                   resume="auto"))
    assert rc == 0 and result.step == 5
    assert [r["step"] for r in H.read_trace(tmp_path)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("component", ["iais", "rank"])
def test_a_non_finite_loss_stops_the_run_naming_step_and_component(data, tmp_path, monkeypatch, capsys, component):
    calls = []
    target = "iais_term" if component == "iais" else "rank_loss"
    original = getattr(objective, target)

    def poisoned(*args, **kwargs):
        calls.append(1)
        value = original(*args, **kwargs)
        if len(calls) == 6:  # step 3 (2 groups per step), its from-text group
            return value * (float("nan") if component == "iais" else float("inf"))
        return value

    monkeypatch.setattr(objective, target, poisoned)
    rc, result = _run(H.train_args(data, tmp_path, steps=6, train_batch_size=1, save_steps=1, no_final_eval=True))
    err = capsys.readouterr().err
    assert rc == 1 and result is None
    assert f"non-finite {component} loss" in err and "at step 3" in err
    # the group, by the ids of its caption and of the images it was scored with (its own first)
    assert re.search(r"from-text group of caption '\d+' with images 'itm_synthetic_\d{6}\.npz', "
                     r"'itm_synthetic_\d{6}\.npz', 'itm_synthetic_\d{6}\.npz', rank 0\)", err), err
    assert H.checkpoints(tmp_path) == ["train_step_0000001.pt", "train_step_0000002.pt"]  # nothing after it
    assert [r["step"] for r in H.read_trace(tmp_path)] == [1, 2]


# ------------------------------------------------------------------ scale out


@pytest.mark.slow
def test_two_process_torchrun_with_gloo(data, tmp_path):
    multi = data["multi"]
    args = H.train_args(data, tmp_path, steps=3, save_steps=3, num_gpus_equivalent=4, test_txt_db=multi.txt_db,
                        test_img_db=multi.img_db)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "integrations.uniter.finetune", *args]
    proc = subprocess.run(cmd, cwd=H.REPO_ROOT, env=H.subprocess_env(), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trace = H.read_trace(tmp_path)
    assert [r["step"] for r in trace] == [1, 2, 3]
    hps = json.loads((tmp_path / "log" / "hps.json").read_text())
    assert hps["world_size"] == 2 and hps["accumulation"] == 4  # 2 x 4 GPU-equivalents / 2 processes
    state = ckpt.load_training_checkpoint(str(tmp_path / "ckpt" / "train_step_0000003.pt"))
    assert state["world_size"] == 2 and len(state["rank_states"]) == 2
    s0, s1 = (r["sampler"] for r in state["rank_states"])
    assert (s0["rank"], s1["rank"]) == (0, 1) and s0["rng"] != s1["rng"]
    assert not torch.equal(state["rank_states"][0]["rng"]["torch"], state["rank_states"][1]["rng"]["torch"])
    metrics = json.loads((tmp_path / "results" / "test_metrics.json").read_text())["metrics"]
    assert metrics["n_captions"] == 36 and metrics["n_images"] == 12
    # both processes trained the same model: the final weights evaluate like the saved ones
    model = UniterForRetrieval(UniterModelConfig.from_dict(H.FT_MODEL), img_dim=H.FT_IMG_DIM)
    load_checkpoint(model, str(tmp_path / "ckpt" / "model_step_3_final.pt"))
    from integrations.retrieval import evaluate_retrieval
    from integrations.uniter.data import ImgDb, TxtDb, collate
    from integrations.uniter.plugin import UniterPairs

    pairs = UniterPairs([(TxtDb(multi.txt_db), ImgDb(multi.img_db, **H.SETTING))])
    again = evaluate_retrieval(model, pairs, collate, progress=False)
    assert again["rsum"] == pytest.approx(metrics["rsum"])


@pytest.mark.slow
def test_sigterm_to_the_torchrun_launcher_saves_and_resumes_exactly_but_the_launcher_exits_1(data, tmp_path):
    """torchrun forwards SIGTERM to its workers, which save at the step boundary and exit 0; the launcher
    itself then raises its SignalException (exit status 1). The resumed run equals the uninterrupted one."""
    def command(out, **extra):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                "integrations.uniter.finetune", *H.train_args(data, out, steps=6, save_steps=1, keep_checkpoints=0,
                                                              deterministic=True, no_final_eval=True,
                                                              num_gpus_equivalent=2, **extra)]

    full = subprocess.run(command(tmp_path / "full"), cwd=H.REPO_ROOT, env=H.subprocess_env(), capture_output=True,
                          text=True, timeout=150)
    assert full.returncode == 0, full.stderr[-3000:]
    launcher = subprocess.Popen(command(tmp_path / "cut"), cwd=H.REPO_ROOT, env=H.subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "cut" / "log" / "train_log.jsonl"
    deadline = time.time() + 120
    while launcher.poll() is None and time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 1 and "SignalException" in err
    assert err.count("received SIGTERM: saving a checkpoint") == 2  # both workers
    stopped = H.read_trace(tmp_path / "cut")[-1]["step"]
    assert 2 <= stopped < 6 and H.checkpoints(tmp_path / "cut")[-1] == f"train_step_{stopped:07d}.pt"
    resumed = subprocess.run(command(tmp_path / "cut", resume="auto"), cwd=H.REPO_ROOT, env=H.subprocess_env(),
                             capture_output=True, text=True, timeout=150)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [{k: r[k] for k in TRACE_KEYS} for r in H.read_trace(tmp_path / "cut")] == \
        [{k: r[k] for k in TRACE_KEYS} for r in H.read_trace(tmp_path / "full")]
