"""The built-in demo: its synthetic relational data set and a shortened end-to-end run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import png_size
from integrations.uniter import demo
from integrations.uniter.config import UniterModelConfig
from integrations.uniter.data import ImgDb, TxtDb
from integrations.uniter.model import UniterForRetrieval

from . import helpers as H

SMALL_SPLITS = {"train": 3, "val": 1, "test": 2}


@pytest.fixture()
def small_demo(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "SPLITS", SMALL_SPLITS)
    monkeypatch.setattr(demo, "PRETRAIN", dict(demo.PRETRAIN, steps=20, batch_size=8))
    return tmp_path


def test_demo_data_are_relational_and_annotated(small_demo):
    logs = []
    paths = demo.ensure_demo_data(str(small_demo), log=logs.append)
    assert len(logs) == 1 and demo.ensure_demo_data(str(small_demo), log=logs.append) == paths  # cached
    assert len(logs) == 1
    meta = json.load(open(os.path.join(paths["test_txt_db"], "meta.json")))
    vocab = open(os.path.join(paths["test_txt_db"], "vocab.txt")).read().split()
    assert vocab == demo.VOCAB and meta["CLS"] == vocab.index("[CLS]") and meta["SEP"] == vocab.index("[SEP]")
    txt = TxtDb(paths["test_txt_db"])
    img = ImgDb(paths["img_db"], **demo.SETTING)
    objects = json.load(open(paths["test_objects"]))["captions"]
    assert len(txt) == SMALL_SPLITS["test"] * 4 * 3 and set(objects) == set(txt.ids)
    families: dict = {}
    for txt_id in txt.ids:
        entry = objects[txt_id]
        words = [vocab[i] for i in txt.input_ids(txt_id)]
        record = img.raw(txt.txt2img[txt_id])
        boxes = record["norm_bb"].astype(np.float32)
        centres = [(boxes[o["regions"], 0] + boxes[o["regions"], 2]).mean() / 2 for o in entry["objects"]]
        heights = [(boxes[o["regions"], 1] + boxes[o["regions"], 3]).mean() / 2 for o in entry["objects"]]
        for obj in entry["objects"]:
            size, colour, shape = obj["name"].split()
            named = [words[i] for i in obj["tokens"]]
            assert colour in named and shape in named and set(named) <= {size, colour, shape}
            assert len(obj["regions"]) == 1
            width = float(boxes[obj["regions"][0], 4])
            assert (width < 0.25) == (size == "small")
        rel = entry["relation"]
        if rel in ("left", "right"):
            assert (centres[0] < centres[1]) == (rel == "left")
        else:
            assert (heights[0] < heights[1]) == (rel == "above")
        families.setdefault(entry["family"], set()).add((entry["img_fname"], rel,
                                                         tuple(o["name"] for o in entry["objects"])))
    for members in families.values():  # base, colour swap, reversed relation, size swap
        assert len(members) == 4
        names = {m[2] for m in members}
        relations = [m[1] for m in members]
        assert len(names) == 3 and len(set(relations)) == 2


def test_mean_isda_is_finite_and_zero_for_uniform_attention(small_demo):
    paths = demo.ensure_demo_data(str(small_demo), log=lambda m: None)
    torch.manual_seed(0)
    model = UniterForRetrieval(UniterModelConfig.from_dict(demo.MODEL_CONFIG), img_dim=demo.IMG_DIM)
    value = demo.mean_isda(model, paths["test_txt_db"], paths["img_db"], paths["test_objects"], batch_size=5)
    assert np.isfinite(value) and value >= 0
    with torch.no_grad():  # zero query weights: uniform attention in every block -> ISDa 0
        last = model.uniter.encoder.layer[-1].attention.self
        last.query.weight.zero_()
        last.query.bias.zero_()
    assert demo.mean_isda(model, paths["test_txt_db"], paths["img_db"], paths["test_objects"]) == \
        pytest.approx(0.0, abs=1e-6)


#: the demo at reduced size, as ``python -m integrations.uniter.demo`` runs it
SMALL_DEMO = ("import sys\nfrom integrations.uniter import demo\n"
              f"demo.SPLITS = {SMALL_SPLITS!r}\n"
              "demo.PRETRAIN = dict(demo.PRETRAIN, steps=20, batch_size=8)\n"
              "sys.exit(demo.main(sys.argv[1:]))\n")


def _run_demo(cache, log_path, *flags) -> str:
    """Run the small demo with stdout and stderr to one file, as ``make demo > log.txt 2>&1``; the log."""
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, "-c", SMALL_DEMO, "--steps", "3", "--cache-dir", str(cache), *flags],
                              cwd=H.REPO_ROOT, env=H.subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                              timeout=300)
    text = open(log_path, encoding="utf-8", newline="").read()
    assert proc.returncode == 0, text[-3000:]
    return text




@pytest.mark.slow
def test_demo_runs_end_to_end_draws_its_pictures_and_logs_plain_lines_to_a_file(small_demo):
    log = _run_demo(small_demo, small_demo / "log.txt")
    assert "\r" not in log and "\x1b" not in log  # no bar redrawing, no terminal codes
    for text in ("generated the synthetic relational set", "pre-trained the tiny UNITER", "RSUM", "mean ISDa",
                 "IAIS singular", "no IAIS", "ITM start", "the paper's experiment", "total wall time",
                 "no IAIS, step 2: validation RSUM"):
        assert text in log, text
    for run in ("no IAIS", "IAIS singular"):  # the last progress record of each training run
        assert re.search(rf"^{run}: 3/3 steps \(100%\) in \d+ s, [0-9.]+ steps/s; loss=", log, re.M), run
    summary = json.load(open(os.path.join(small_demo, "runs", "demo_summary.json")))
    assert set(summary["results"]) == {"start", "none", "singular"}
    for result in summary["results"].values():
        assert np.isfinite(result["isda"]) and 0 <= result["test"]["rsum"] <= 600
    ckpt = summary["results"]["singular"]["out_dir"]
    assert os.path.isfile(os.path.join(ckpt, "ckpt", "model_step_3_final.pt"))
    pictures = summary["pictures"]
    assert pictures == {"attention": str(small_demo / "runs" / "object_attention.png"),
                        "curves": str(small_demo / "runs" / "training_curves.png")}
    assert pictures["attention"] in log and pictures["curves"] in log  # their paths are printed
    width, height = png_size(pictures["attention"])
    assert 800 <= width <= 3000 and 0.6 * width < height <= 3000  # two rows (without / with IAIS) of two panels
    assert png_size(pictures["curves"]) == (1200, 780)  # 2 x 2 panels at 120 dpi


@pytest.mark.slow
def test_demo_quiet_prints_the_results_only(small_demo):
    log = _run_demo(small_demo, small_demo / "quiet.txt", "--quiet")
    assert "RSUM" in log and "mean ISDa" in log and "object_attention.png" in log and "training_curves.png" in log
    for text in ("iaisreg demo:", "generated the synthetic", "pre-trained the tiny", "data:", ": validation RSUM", "steps (",
                 "wall time"):
        assert text not in log, text
