"""Full-ranking image-text retrieval evaluation (every caption against every image).

Metrics (fractions in [0, 1], keys as in the original logs):

- ``img_r{1,5,10}``: image retrieval (text -> image), the fraction of captions
  whose image ranks in the top K among all images;
- ``txt_r{1,5,10}``: text retrieval (image -> text), the fraction of images
  with at least one of their captions in the top K among all captions;
- ``img_r_mean``, ``txt_r_mean``, ``r_mean`` as in the original, and ``rsum``,
  the paper's Meta-Sum: the six recalls in percent, summed.

Ties are broken by index (the earlier image / caption ranks first). Unlike the
original ``itm_eval``, a caption counts once for image retrieval (the original
also counted the first K caption rows, inflating IR@K slightly).
"""

from __future__ import annotations

import time
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .mining import to_device
from .progress import Progress
from .protocol import Collate, Pairs

__all__ = ["ScoreMatrix", "NonFiniteScoreError", "score_matrix", "compute_recalls", "evaluate_retrieval",
           "format_metrics_table", "RECALL_KS"]

RECALL_KS = (1, 5, 10)


class NonFiniteScoreError(ValueError):
    """The model scored some pairs as NaN; the message names the first caption and image."""


class ScoreMatrix(NamedTuple):
    """Scores of every (caption, image) pair.

    Attributes:
        scores: ``(n_captions, n_images)`` float32 match logits, on the CPU.
        txt_ids: caption ids, the row order.
        img_fnames: image names, the column order.
        gt: ``(n_captions,)`` LongTensor, column of each caption's image.
        seconds: wall time of the scoring, gathers included.
    """

    scores: torch.Tensor
    txt_ids: list
    img_fnames: list
    gt: torch.Tensor
    seconds: float


def _pair_batches(n_images: int, n_txt: int, order: np.ndarray, batch_size: int):
    """Chunks of the flattened (image, caption) pairs, as lists of ``(image, captions)``.

    Captions are visited longest first for even images and shortest first for
    odd ones, so that a batch spanning two images pads little.
    """
    reverse = order[::-1].copy()
    batch, fill = [], 0
    for image in range(n_images):
        caps = order if image % 2 == 0 else reverse
        start = 0
        while start < n_txt:
            take = min(batch_size - fill, n_txt - start)
            batch.append((image, caps[start:start + take]))
            fill += take
            start += take
            if fill == batch_size:
                yield batch
                batch, fill = [], 0
    if batch:
        yield batch


@torch.no_grad()
def score_matrix(model: torch.nn.Module, pairs: Pairs, collate: Collate, *, batch_size: int = 400,
                 amp_dtype: torch.dtype | None = None, progress: bool = True) -> ScoreMatrix:
    """Score every caption of ``pairs`` against every image of it.

    Runs on the model's device. Under an initialised process group, rank ``r``
    scores images ``r, r + W, ...`` and every rank receives the full matrix.
    Each image is decoded once; a batch holds ``batch_size`` pairs, grouped by
    image, with padding kept small by sorting captions by length.

    Args:
        model: a plug-in's model (or DDP around one).
        pairs: the split; collate: the plug-in's batch builder.
        batch_size: pairs per forward pass.
        amp_dtype: run under ``torch.autocast`` with this dtype (None: no autocast).
        progress: show the progress on rank 0 (see :mod:`.progress`).
    """
    if isinstance(model, DistributedDataParallel):
        model = model.module
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    start_time = time.perf_counter()
    device = next(model.parameters()).device
    n_txt = pairs.n_captions
    lens = np.array([pairs.caption_length(c) for c in range(n_txt)], dtype=np.int64)
    rank, world = distributed.rank(), distributed.world_size()
    mine = list(range(rank, pairs.n_images, world))
    order = np.argsort(-lens, kind="stable")
    shard = torch.zeros(n_txt, len(mine), dtype=torch.float32, device=device)
    was_training = model.training
    model.eval()
    images: dict[int, object] = {}
    bar = Progress(n_txt * len(mine), unit="pair", desc="scoring", enabled=progress and rank == 0)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else torch.autocast(device.type, enabled=False))
    try:
        for batch in _pair_batches(len(mine), n_txt, order, batch_size):
            for u, _ in batch:
                if u not in images:  # decoded once
                    images[u] = pairs.image(mine[u])
            caps = np.concatenate([c for _, c in batch])
            index = [k for k, (_, c) in enumerate(batch) for _ in range(len(c))]
            inputs = collate([pairs.caption(int(c)) for c in caps], [images[u] for u, _ in batch], index)
            with autocast:
                logits = model(**to_device(inputs, device)).logits
            cols = [batch[k][0] for k in index]
            shard.index_put_((torch.from_numpy(caps).to(device), torch.tensor(cols, device=device)), logits.float())
            for u in [u for u in images if u < batch[-1][0]]:  # images are visited in order
                del images[u]
            bar.update(len(caps))
    finally:
        bar.close()
        model.train(was_training)
    if world > 1:
        on_cpu = torch.distributed.get_backend() == "gloo"
        shard = distributed.gather_columns(shard.cpu() if on_cpu else shard, pairs.n_images)
    _check_scores(shard, pairs)
    gt = torch.tensor(pairs.caption_image, dtype=torch.long)
    return ScoreMatrix(shard.cpu(), list(pairs.caption_ids), list(pairs.image_ids), gt,
                       time.perf_counter() - start_time)


def _check_scores(scores: torch.Tensor, pairs: Pairs) -> None:
    """:class:`NonFiniteScoreError` naming the first NaN score's caption and image (rank order, all ranks)."""
    nan = torch.isnan(scores)
    if not bool(nan.any()):
        return
    rows, cols = nan.nonzero(as_tuple=True)
    c, i = int(rows[0]), int(cols[0])
    images = len(set(cols.tolist()))
    raise NonFiniteScoreError(
        f"the model scores caption {pairs.caption_ids[c]!r} with image {pairs.image_ids[i]!r} as NaN ({len(rows)} "
        f"of {scores.numel()} pairs, {images} of {pairs.n_images} images): check the weights (when every pair is "
        f"NaN) or the data of those images")


def compute_recalls(scores: torch.Tensor, gt: torch.Tensor,
                    ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Recall@K both ways from a score matrix.

    Args:
        scores: ``(n_captions, n_images)``; higher is better. NaN is an error.
        gt: ``(n_captions,)`` column of each caption's image.
        ks: the K values.

    Returns:
        ``img_r{K}`` (text -> image: fraction of captions whose image ranks
        < K), ``txt_r{K}`` (image -> text: fraction of images, among those with
        a caption, whose best caption ranks < K), ``img_r_mean``,
        ``txt_r_mean``, ``r_mean`` and ``rsum`` (all recalls in percent, summed).
        Ranks count the strictly better entries plus equal entries of lower index.

    Example:
        >>> s = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
        >>> r = compute_recalls(s, torch.tensor([0, 1, 1]), ks=(1,))
        >>> r["img_r1"], r["txt_r1"]
        (0.6666666666666666, 1.0)
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (n_captions, n_images), got shape {tuple(scores.shape)}")
    n_txt, n_img = scores.shape
    if tuple(gt.shape) != (n_txt,):
        raise ValueError(f"gt must be ({n_txt},), got shape {tuple(gt.shape)}")
    if torch.isnan(scores).any():
        raise ValueError(f"scores hold {int(torch.isnan(scores).sum())} NaN value(s); refusing to rank them")
    gt = gt.to(scores.device, torch.long)
    img_idx = torch.arange(n_img, device=scores.device)
    txt_idx = torch.arange(n_txt, device=scores.device)
    chunk = max(1, (1 << 24) // max(n_txt, n_img))
    ir_rank = torch.empty(n_txt, dtype=torch.long, device=scores.device)
    tr_rank = torch.empty(n_txt, dtype=torch.long, device=scores.device)
    for lo in range(0, n_txt, chunk):
        rows = txt_idx[lo:lo + chunk]
        g = gt[rows].unsqueeze(1)
        # text -> image: rank of the caption's image in its row
        s = scores[rows]
        s_gt = s.gather(1, g)
        ir_rank[rows] = (s > s_gt).sum(1) + ((s == s_gt) & (img_idx < g)).sum(1)
        # image -> text: rank of the caption in its image's column
        cols = scores[:, gt[rows]].T                        # (chunk, n_txt)
        tr_rank[rows] = (cols > s_gt).sum(1) + ((cols == s_gt) & (txt_idx < rows.unsqueeze(1))).sum(1)
    best = torch.full((n_img,), n_txt, dtype=torch.long, device=scores.device)
    best = best.scatter_reduce(0, gt, tr_rank, reduce="amin")
    has_caption = torch.zeros(n_img, dtype=torch.bool, device=scores.device)
    has_caption[gt] = True
    out: dict[str, float] = {}
    for k in ks:
        out[f"img_r{k}"] = (ir_rank < k).double().mean().item()
    for k in ks:
        out[f"txt_r{k}"] = (best[has_caption] < k).double().mean().item()
    out["img_r_mean"] = sum(out[f"img_r{k}"] for k in ks) / len(ks)
    out["txt_r_mean"] = sum(out[f"txt_r{k}"] for k in ks) / len(ks)
    out["r_mean"] = (out["img_r_mean"] + out["txt_r_mean"]) / 2
    out["rsum"] = 100.0 * sum(out[f"{d}_r{k}"] for d in ("img", "txt") for k in ks)
    return out


def evaluate_retrieval(model: torch.nn.Module, pairs: Pairs, collate: Collate, *, batch_size: int = 400,
                       amp_dtype: torch.dtype | None = None, progress: bool = True) -> dict[str, float]:
    """Full-ranking retrieval metrics of ``model`` on one split.

    Call it on every rank of a process group (each scores a shard of the
    images); every rank returns the same dict: the recalls of
    :func:`compute_recalls` plus ``n_captions``, ``n_images``, ``n_pairs``,
    ``seconds`` and ``pairs_per_s``. See :func:`score_matrix` for the arguments.
    """
    result = score_matrix(model, pairs, collate, batch_size=batch_size, amp_dtype=amp_dtype, progress=progress)
    metrics = compute_recalls(result.scores, result.gt)
    n_pairs = result.scores.numel()
    metrics.update(n_captions=len(result.txt_ids), n_images=len(result.img_fnames), n_pairs=n_pairs,
                   seconds=result.seconds, pairs_per_s=n_pairs / max(result.seconds, 1e-9))
    return metrics


def format_metrics_table(metrics: dict, title: str) -> str:
    """A short table of R@1/5/10 both ways and RSUM (percent)."""
    lines = [title,
             f"  {'':16s}{'R@1':>8s}{'R@5':>8s}{'R@10':>8s}",
             f"  {'text -> image':16s}" + "".join(f"{100 * metrics[f'img_r{k}']:8.2f}" for k in RECALL_KS),
             f"  {'image -> text':16s}" + "".join(f"{100 * metrics[f'txt_r{k}']:8.2f}" for k in RECALL_KS),
             f"  {'RSUM':16s}{metrics['rsum']:8.2f}"]
    return "\n".join(lines)
