"""Shared helpers of the integration tests: tiny models, checkpoints in the original layout,
reference computations, and command lines of quick fine-tuning runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch

from integrations.uniter.config import UniterModelConfig
from integrations.uniter.model import UniterForRetrieval

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
#: the released Flickr30k hard-negative config (keys and values as shipped; tests replace the paths)
FLICKR_CONFIG = os.path.join(FIXTURES, "train-itm-flickr-base-8gpu-hn.json")

#: a tiny model with the real feature width (2048) and real special-token ids
TINY = {
    "vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}
#: the img_db setting of the test databases
SETTING = {"conf_th": 0.2, "max_bb": 8, "min_bb": 2}


def tiny_config() -> UniterModelConfig:
    return UniterModelConfig.from_dict(TINY, source="tiny")


def random_model(seed: int = 0) -> UniterForRetrieval:
    """A tiny model whose weights are all non-trivial (LayerNorms and biases too)."""
    torch.manual_seed(seed)
    model = UniterForRetrieval(tiny_config())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.mul_(10.0)  # 0.2 std: scores spread, no near-ties
    return model.eval()


def to_original_format(state: dict, *, fp16: bool = True, rank_output: bool = True,
                       gamma_beta: bool = True, pretrain_heads: bool = True) -> dict:
    """A state dict laid out like the released UNITER checkpoints.

    float16 tensors, some LayerNorms named gamma/beta (old checkpoints), the
    pre-training heads present, and rank_output absent for a pre-trained one.
    """
    out = {}
    for key, value in state.items():
        if not rank_output and key.startswith("rank_output."):
            continue
        if gamma_beta and ".attention.output.LayerNorm." in key:
            key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        out[key] = value.half() if fp16 else value.clone()
    if pretrain_heads:
        h, v = TINY["hidden_size"], TINY["vocab_size"]
        g = torch.Generator().manual_seed(1)
        extra = {
            "cls.predictions.bias": (v,), "cls.predictions.transform.dense.weight": (h, h),
            "cls.predictions.transform.dense.bias": (h,), "cls.predictions.transform.LayerNorm.gamma": (h,),
            "cls.predictions.transform.LayerNorm.beta": (h,), "cls.predictions.decoder.weight": (v, h),
            "feat_regress.net.0.weight": (h, h), "feat_regress.net.0.bias": (h,),
            "feat_regress.weight": (2048, h), "feat_regress.bias": (2048,),
            "region_classifier.net.0.weight": (h, h), "region_classifier.net.3.weight": (1601, h),
            "region_classifier.net.3.bias": (1601,),
        }
        for key, shape in extra.items():
            out[key] = torch.randn(shape, generator=g).half()
    return out


def fp16_rounded(model: UniterForRetrieval) -> UniterForRetrieval:
    """A float32 copy of ``model`` whose weights went through float16."""
    copy = UniterForRetrieval(model.config)
    copy.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    return copy.eval()


def brute_force_recalls(scores, txt_ids, img_fnames, txt2img, ks=(1, 5, 10)) -> dict:
    """Recalls by sorting in pure Python (ties: lower index first)."""
    rows = scores.tolist()
    n_txt, n_img = len(rows), len(img_fnames)
    out = {}
    for k in ks:
        hits = 0
        for t in range(n_txt):
            ranking = sorted(range(n_img), key=lambda j: (-rows[t][j], j))
            hits += img_fnames.index(txt2img[txt_ids[t]]) in ranking[:k]
        out[f"img_r{k}"] = hits / n_txt
    for k in ks:
        hits = 0
        for j, fname in enumerate(img_fnames):
            ranking = sorted(range(n_txt), key=lambda t: (-rows[t][j], t))
            hits += any(txt2img[txt_ids[t]] == fname for t in ranking[:k])
        out[f"txt_r{k}"] = hits / n_img
    out["rsum"] = 100 * sum(out[f"{d}_r{k}"] for d in ("img", "txt") for k in ks)
    return out


def score_one_pair(model: UniterForRetrieval, token_ids: list, feat: torch.Tensor, boxes: torch.Tensor) -> float:
    """Score one pair with no padding at all: text then regions, all positions real."""
    ids = torch.tensor([token_ids])
    n = ids.shape[1] + feat.shape[0]
    with torch.no_grad():
        out = model(ids, torch.arange(ids.shape[1]).unsqueeze(0), feat.unsqueeze(0), boxes.unsqueeze(0),
                    torch.ones(1, n, dtype=torch.long), None)
    return float(out.logits[0])


# ----------------------------------------------------------------- quick fine-tuning runs

FT_VOCAB = 120
FT_IMG_DIM = 16
#: a tiny UNITER; initializer_range 0.2 so that it starts learning within a few dozen steps
FT_MODEL = {"vocab_size": FT_VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
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


def released_config(data: dict, tmp_path, **changes) -> str:
    """The released Flickr30k config, keys and values as shipped, its paths pointed at the ``multi`` test set.

    Written under its released name (``train-itm-flickr-base-8gpu-hn.json``) into ``tmp_path``.
    """
    with open(FLICKR_CONFIG, encoding="utf-8") as handle:
        cfg = json.load(handle)
    multi = data["multi"]
    cfg.update(train_txt_dbs=[multi.txt_db], train_img_dbs=[multi.img_db], val_txt_db=multi.txt_db,
               val_img_db=multi.img_db, test_txt_db=multi.txt_db, test_img_db=multi.img_db,
               checkpoint=None, model_config=data["model_config"], **changes)
    path = os.path.join(str(tmp_path), os.path.basename(FLICKR_CONFIG))
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(cfg, handle, indent=4)
    return path


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


def brute_force_isda(probs_head_mean_text: np.ndarray, probs_head_mean_img: np.ndarray, tgroups, igroups) -> float:
    """Cps + row normalisation + m-KL, written with loops (paper Eq. 7-9)."""
    def obj(p, groups):
        k = len(groups)
        m = np.zeros((k, k))
        for a, ra in enumerate(groups):
            for b, cb in enumerate(groups):
                m[a, b] = sum(p[i, j] for i in ra for j in cb) / len(ra)
        return m / m.sum(1, keepdims=True)

    a, b = obj(probs_head_mean_text, tgroups), obj(probs_head_mean_img, igroups)
    return float(np.sum(a * np.log(a / b) + b * np.log(b / a)))


def run_commands(cases: list[tuple[str, list[str]]], *, timeout: float = 900) -> list[dict]:
    """Run ``(module, argv)`` command lines, each in a process of its own, after importing once
    (:mod:`.command_runner`); ``[{"status", "stdout", "stderr"}, ...]`` in order (status ``-S``: killed by
    signal ``S``)."""
    payload = json.dumps([{"module": module, "argv": [str(a) for a in argv]} for module, argv in cases])
    proc = subprocess.run([sys.executable, "-m", "tests.integration.command_runner"], input=payload, cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not log records (``<time> [rank N] LEVEL ...``)."""
    return [line for line in stderr.splitlines() if line.strip() and " [rank " not in line[:40]]
