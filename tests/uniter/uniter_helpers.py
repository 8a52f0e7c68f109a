"""Shared helpers of the UNITER integration tests (independent reference code)."""

from __future__ import annotations

import os

import torch

from integrations.uniter.config import UniterModelConfig
from integrations.uniter.model import UniterForRetrieval

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

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
