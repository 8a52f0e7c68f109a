"""The runbook's dry run (``docs/reproduce.md``, section 3), run as written on generated data.

The data are laid out as UNITER's ``download_itm.sh`` lays them out
(``txt_db/itm_flickr30k_{train,val,test}.db``, ``img_db/flickr30k``, the COCO
splits, ``pretrained/uniter-{base,large}.pt``) with the released detector
setting (0.2/100/10); the training configs are the released key set under
UNITER's file names; the model configs are tiny ones under the released names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from integrations.uniter.config import UniterModelConfig
from integrations.uniter.data.synthetic import make_retrieval_dbs
from integrations.uniter.model import UniterForRetrieval

from . import helpers as H

RUNBOOK = os.path.join(H.REPO_ROOT, "docs", "reproduce.md")
MARKER = "<!-- tested by tests/integration/test_reproduce.py"
#: tiny stand-ins of uniter-base.json and uniter-large.json (different depths, so a mix-up is caught)
SIZES = {"base": 2, "large": 3}


def dry_run_block() -> str:
    """The first ``bash`` block after the marker in the runbook."""
    with open(RUNBOOK, encoding="utf-8") as handle:
        text = handle.read()
    found = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    return found.group(1)


def _copy_txt_db(src: str, dst: str) -> None:
    shutil.copytree(src, dst)  # a copy, not a link: LMDB opens an environment once per process


def make_store(root) -> dict:
    """``$STORE`` and ``$CONFIGS`` as the download script and UNITER's repository lay them out."""
    store, configs = os.path.join(root, "store"), os.path.join(root, "configs")
    common = dict(captions_per_image=2, vocab_size=H.FT_VOCAB, img_dim=H.FT_IMG_DIM, min_words=2, max_words=8,
                  boxes=(10, 12), conf_th=0.2, max_bb=100, min_bb=10)
    txt = os.path.join(store, "txt_db")
    flickr = make_retrieval_dbs(store, n_images=9, name="flickr30k", seed=0, **common)  # 8 processes need 8 images
    for split in ("train", "val", "test"):
        _copy_txt_db(flickr.txt_db, os.path.join(txt, f"itm_flickr30k_{split}.db"))
    coco_train = make_retrieval_dbs(store, n_images=5, name="coco_train2014", seed=1, **common)
    coco_val = make_retrieval_dbs(store, n_images=5, name="coco_val2014", seed=2, **common)
    _copy_txt_db(coco_train.txt_db, os.path.join(txt, "itm_coco_train.db"))
    for split in ("restval", "val", "test"):
        _copy_txt_db(coco_val.txt_db, os.path.join(txt, f"itm_coco_{split}.db"))
    os.makedirs(os.path.join(store, "pretrained"))
    os.makedirs(configs)
    for size, layers in SIZES.items():
        cfg = {**H.FT_MODEL, "num_hidden_layers": layers}
        with open(os.path.join(configs, f"uniter-{size}.json"), "w", encoding="utf-8") as handle:
            json.dump(cfg, handle)
        model = UniterForRetrieval(UniterModelConfig.from_dict(cfg), img_dim=H.FT_IMG_DIM)
        state = {k: v.half() for k, v in model.state_dict().items() if not k.startswith("rank_output.")}
        torch.save(state, os.path.join(store, "pretrained", f"uniter-{size}.pt"))  # as released: fp16, no head
    _write_released_configs(configs)
    return {"STORE": store, "CONFIGS": configs, "RUNS": os.path.join(root, "runs")}


def _write_released_configs(configs: str) -> None:
    """UNITER's four hard-negative configs: the released key set and values, container paths included."""
    with open(H.FLICKR_CONFIG, encoding="utf-8") as handle:
        flickr = json.load(handle)
    coco = {**flickr, "train_txt_dbs": ["/txt/itm_coco_train.db", "/txt/itm_coco_restval.db"],
            "train_img_dbs": ["/img/coco_train2014/", "/img/coco_val2014"], "val_txt_db": "/txt/itm_coco_val.db",
            "val_img_db": "/img/coco_val2014/", "test_txt_db": "/txt/itm_coco_test.db",
            "test_img_db": "/img/coco_val2014/"}
    large = {"model_config": "/src/config/uniter-large.json"}  # flickr-large keeps the base checkpoint, as released
    files = {"flickr-base": flickr, "flickr-large": {**flickr, **large},
             "coco-base": coco, "coco-large": {**coco, **large, "checkpoint": "/pretrain/uniter-large.pt",
                                               "learning_rate": 3e-05, "full_val": False}}
    for name, cfg in files.items():
        with open(os.path.join(configs, f"train-itm-{name}-16gpu-hn.json"), "w", encoding="utf-8") as handle:
            json.dump(cfg, handle, indent=4)


def run_block(block: str, dirs: dict, tmp_path) -> subprocess.CompletedProcess:
    """The block under bash, from the repository root, with ``python`` being this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "python"  # a script, not a link: a virtual environment is found from the invoked path
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    env = {**H.subprocess_env(), **dirs, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-e", "-c", block], cwd=H.REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("runbook"))


def test_the_runbook_dry_run_passes_on_data_laid_out_as_released(store, tmp_path):
    block = dry_run_block()
    proc = run_block(block, store, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plans = proc.stdout.split("dry run: every check passed")[1:]
    assert len(plans) == block.count("--dry-run") == 5
    flickr_base, flickr_large, coco_base, coco_large, evaluation = plans
    assert "1 process(es) x 64 micro-steps x 2 groups = 128 groups per update" in flickr_base  # 8 GPU-equivalents
    assert "layout:    original" in flickr_base and "IAIS none" in flickr_base
    assert "8 process(es) x 8 micro-steps" in flickr_large and "IAIS singular" in flickr_large
    assert "uniter-large.pt" in flickr_large  # the released file's base checkpoint is overridden
    assert "2 process(es) x 32 micro-steps" in coco_base and "layout:    clean" in coco_base
    assert "train 20 captions / 10 images" in coco_base  # both training databases
    assert "lr 3e-05" in coco_large and "IAIS distributed" in coco_large and "(uniter implementation)" in coco_large
    assert "test: 18 captions x 9 images = 162 pairs" in evaluation
    assert "precision: fp32 on cpu" in flickr_base
    assert not os.path.exists(store["RUNS"])  # nothing written


def test_the_runbook_dry_run_stops_on_a_missing_image_and_on_mismatched_weights(store, tmp_path):
    block = dry_run_block()
    broken = dict(store, STORE=str(tmp_path / "store"))
    shutil.copytree(store["STORE"], broken["STORE"])
    nbb = os.path.join(broken["STORE"], "img_db", "flickr30k", "nbb_th0.2_max100_min10.json")
    with open(nbb, encoding="utf-8") as handle:
        counts = json.load(handle)
    missing = sorted(counts)[0]
    del counts[missing]
    with open(nbb, "w", encoding="utf-8") as handle:
        json.dump(counts, handle)
    proc = run_block(block, broken, tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and missing in errors[0], proc.stderr[-2000:]
    # the released flickr-large file's own checkpoint (uniter-base.pt) does not fit uniter-large.json
    mixed = block.replace("$STORE/pretrained/uniter-large.pt", "$STORE/pretrained/uniter-base.pt")
    proc = run_block(mixed, store, tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "checkpoint lacks" in errors[0], proc.stderr[-2000:]
