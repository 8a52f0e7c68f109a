"""A straightforward per-sample-loop implementation of IAIS, written from
the semantics in ``docs/semantics.md`` in the structure of the
authors' UNITER code.

``blocks="authors"`` (default) follows that structure closely: the four
block probabilities are computed for the whole batch, each with its own 0/1
block mask turned into an additive ``-10000`` mask, a full-row softmax and a
multiplication by the mask, then averaged over heads; a Python loop then
reads each sample's blocks and computes its loss, building the singular
mirror from the argmax moved to the host and nested Python index lists. ``blocks="sliced"`` is a
leaner loop that slices each sample's compact blocks first and softmaxes
only those (a stronger baseline for the benchmark).

It is deliberately plain PyTorch with Python loops and exists to check the
vectorised library (tests) and to measure it (``bench/loss.py``). It is not
part of the package.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def _kl_batchmean(log_input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # torch.nn.KLDivLoss(reduction="batchmean") as the authors call it
    return F.kl_div(log_input, target, reduction="batchmean")


def _official(P: dict, anchor: str, mode: str, host_index: bool = False) -> torch.Tensor:
    """One head slot of the authors' loss; P holds (n_r, n_c) block softmaxes.

    ``host_index``: build the singular mirror as the authors' code does, by
    moving the argmax to the host and indexing with nested Python lists."""
    if anchor == "V":
        p_aa, p_ao, p_oa, p_oo = P["VV"], P["VL"], P["LV"], P["LL"]
    else:
        p_aa, p_ao, p_oa, p_oo = P["LL"], P["LV"], P["VL"], P["VV"]
    if mode == "singular":
        if host_index:
            index = p_ao.argmax(-1).detach().cpu().numpy().tolist()
            rows = [[i] * len(index) for i in index]
            cols = [index] * len(index)
            m = p_oo[rows, cols]
        else:
            idx = p_ao.argmax(-1)
            m = p_oo[idx[:, None], idx[None, :]]
        q = torch.softmax(m, dim=-1)
        return _kl_batchmean(p_aa.log(), q) + _kl_batchmean(q.log(), p_aa)
    q = p_ao @ p_oa
    return _kl_batchmean(torch.log(p_aa + 1e-6), q) + _kl_batchmean(torch.log(q + 1e-6), p_aa)


def _paper(S: dict, P: dict, anchor: str, mode: str) -> torch.Tensor:
    """One head slot of the printed equations (Eq. 8, 10-13)."""
    if anchor == "V":
        s_ao, s_oo, p_aa, p_ao, p_oa = S["VL"], S["LL"], P["VV"], P["VL"], P["LV"]
    else:
        s_ao, s_oo, p_aa, p_ao, p_oa = S["LV"], S["VV"], P["LL"], P["LV"], P["VL"]
    if mode == "singular":
        idx = s_ao.argmax(-1)
        m = s_oo[idx[:, None], idx[None, :]]
        log_q = torch.log_softmax(m, dim=-1)
    else:
        log_q = torch.log(p_ao @ p_oa)
    q = log_q.exp()
    log_p = p_aa.log()
    kl_pq = (p_aa * (log_p - log_q)).sum(-1)
    kl_qp = (q * (log_q - log_p)).sum(-1)
    return (kl_pq + kl_qp).sum()


def reference_iais(
    attn: torch.Tensor,
    text_positions: Sequence[Sequence[int]],
    image_positions: Sequence[Sequence[int]],
    *,
    mode: str = "singular",
    anchor: str = "V",
    variant: str = "official",
    heads: str = "auto",
    inputs: str = "scores",
    reduction: str = "mean",
    blocks: str = "authors",
) -> torch.Tensor:
    """Per-sample loop. ``attn``: (B, H, N, N) or (B, N, N); positions: per sample lists."""
    if attn.dim() == 3:
        attn = attn[:, None]
    if heads == "auto":
        heads = "mean_probs" if variant == "official" else "per_head"
    anchors = ["V", "L"] if anchor == "both" else [anchor]
    scores = attn
    if inputs == "probs":
        scores = scores.clamp_min(torch.finfo(scores.dtype).tiny).log()
    if heads == "mean_scores":
        scores = scores.mean(1, keepdim=True)
    batch_p = None
    if blocks == "authors":
        bsz, _, n, _ = scores.shape
        member = {}
        for key, positions in (("L", text_positions), ("V", image_positions)):
            m = torch.zeros(bsz, n, dtype=scores.dtype, device=scores.device)
            for b, pos in enumerate(positions):
                m[b, list(pos)] = 1.0
            member[key] = m
        batch_p = {}
        for r in "LV":
            for c in "LV":
                mask2d = (member[r][:, :, None] * member[c][:, None, :])[:, None]
                probs = torch.softmax(scores + (1.0 - mask2d) * -10000.0, dim=-1) * mask2d
                batch_p[r + c] = probs.mean(1, keepdim=True) if heads == "mean_probs" else probs
    losses = []
    for b in range(attn.shape[0]):
        ti = torch.tensor(list(text_positions[b]), dtype=torch.long, device=attn.device)
        vi = torch.tensor(list(image_positions[b]), dtype=torch.long, device=attn.device)
        if len(ti) == 0 or len(vi) == 0:
            losses.append(attn.new_zeros(()))
            continue
        s = scores[b]
        idx = {"L": ti, "V": vi}
        S = {r + c: s[:, idx[r]][:, :, idx[c]] for r in "LV" for c in "LV"}
        if batch_p is not None:
            P = {k: batch_p[k][b][:, idx[k[0]]][:, :, idx[k[1]]] for k in S}
        else:
            P = {k: torch.softmax(v, dim=-1) for k, v in S.items()}
            if heads == "mean_probs":
                P = {k: v.mean(0, keepdim=True) for k, v in P.items()}
        if heads == "mean_probs":
            S = {k: v.log() for k, v in P.items()}
        total = attn.new_zeros(())
        for a in anchors:
            per_head = []
            for h in range(next(iter(P.values())).shape[0]):
                Ph = {k: v[h] for k, v in P.items()}
                Sh = {k: v[h] for k, v in S.items()}
                per_head.append(_official(Ph, a, mode, host_index=blocks == "authors") if variant == "official"
                                else _paper(Sh, Ph, a, mode))
            total = total + torch.stack(per_head).mean()
        losses.append(total)
    per = torch.stack(losses)
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.mean()
