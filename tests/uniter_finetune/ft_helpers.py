"""Shared helpers of the fine-tuning tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the released Flickr30k hard-negative config (keys and values as shipped; paths are replaced in the test)
FLICKR_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                             "train-itm-flickr-base-8gpu-hn.json")

VOCAB = 120
IMG_DIM = 16
SETTING = {"conf_th": 0.2, "max_bb": 8, "min_bb": 2}
#: a tiny UNITER; initializer_range 0.2 so that it starts learning within a few dozen steps
MODEL = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": 16, "initializer_range": 0.2}


def train_args(data: dict, out_dir, *, split: str = "multi", steps: int = 4, **overrides) -> list[str]:
    """CLI arguments of a quick run on one of the ``data`` fixture's sets."""
    dbs = data[split]
    opts = {
        "--txt-db": dbs.txt_db, "--img-db": dbs.img_db, "--model-config": data["model_config"],
        "--output-dir": str(out_dir), "--num-train-steps": steps, "--train-batch-size": 2,
        "--negative-size": 5, "--hard-neg-size": 2, "--inf-minibatch-size": 4, "--learning-rate": 1e-3,
        "--warmup-steps": 1, "--dropout": 0.1, "--valid-steps": 1000, "--n-workers": 0, "--iais": "singular",
        "--save-steps": 0,
    }
    opts.update({k if k.startswith("--") else "--" + k.replace("_", "-"): v for k, v in overrides.items()})
    args = []
    for key, value in opts.items():
        if value is None:
            continue
        if value is True:
            args.append(key)
        else:
            args += [key, str(value)]
    args += ["--set", f"max_bb={SETTING['max_bb']}", "--set", f"min_bb={SETTING['min_bb']}",
             "--no-progress", "--no-tensorboard", "--quiet", "--threads", "1"]
    return args


def read_trace(out_dir) -> list[dict]:
    with open(os.path.join(str(out_dir), "log", "train_log.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def checkpoints(out_dir) -> list[str]:
    ckpt = os.path.join(str(out_dir), "ckpt")
    return sorted(n for n in os.listdir(ckpt) if n.startswith("train_step_"))


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_module(args: list[str], *, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "integrations.uniter.finetune", *args], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=timeout, **kwargs)
