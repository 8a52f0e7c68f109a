"""Full-ranking image-text retrieval evaluation (every caption against every image).

Command line (from a checkout)::

    python -m integrations.uniter.evaluate --config train-itm-flickr-base-8gpu-hn.json \\
        --checkpoint ckpt/model_step_5000.pt --model-config uniter-base.json --output results.json

    torchrun --nproc_per_node=8 -m integrations.uniter.evaluate ...   # sharded over images

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

import argparse
import json
import logging
import os
import sys
import time
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import _dist
from .config import TrainConfig, UniterModelConfig
from .data import ImgDb, MissingRecordError, TxtDb, layout_tensors
from .model import UniterForRetrieval, load_checkpoint

__all__ = ["ScoreMatrix", "score_matrix", "compute_recalls", "evaluate_retrieval", "main"]

logger = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)
_PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class ScoreMatrix(NamedTuple):
    """Scores of every (caption, image) pair.

    Attributes:
        scores: ``(n_captions, n_images)`` float32 rank logits, on the CPU.
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


def _open_dbs(txt_db, img_db) -> tuple[TxtDb, ImgDb]:
    if isinstance(txt_db, (str, os.PathLike)):
        txt_db = TxtDb(txt_db, max_txt_len=-1)
    if isinstance(img_db, (str, os.PathLike)):
        img_db = ImgDb(img_db)
    if not isinstance(txt_db, TxtDb):
        raise TypeError(f"txt_db must be a TxtDb or a path, got {type(txt_db).__name__}")
    if not isinstance(img_db, ImgDb):
        raise TypeError(f"img_db must be an ImgDb or a path, got {type(img_db).__name__}")
    return txt_db, img_db


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-device copy that does not make the host wait for the device."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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


def _model_inputs(batch, regions, lens: np.ndarray, txt_all: torch.Tensor, img_dim: int):
    """Model inputs of one batch of ``(image, caption positions)`` segments.

    Each image of the batch appears once in ``img_feat`` ``(U, R, img_dim)``;
    rows point at theirs through ``img_index``. Returns ``(inputs, rows, cols)``
    with the caption index and the (shard) image column of every row.
    """
    device = txt_all.device
    caps = np.concatenate([c for _, c in batch])
    counts = [len(c) for _, c in batch]
    txt_lens = lens[caps].tolist()
    num_bbs = [regions[image][0].shape[0] for image, c in batch for _ in range(len(c))]
    lay = layout_tensors(txt_lens, num_bbs)
    max_nbb = max(num_bbs)
    img_feat = torch.zeros(len(batch), max_nbb, img_dim, device=device)
    img_pos = torch.zeros(len(batch), max_nbb, 7, device=device)
    for u, (image, _) in enumerate(batch):
        feat, boxes = regions[image]
        img_feat[u, : feat.shape[0]] = feat
        img_pos[u, : boxes.shape[0]] = boxes
    img_index = torch.repeat_interleave(torch.arange(len(batch)), torch.tensor(counts))
    rows = _to_device(torch.from_numpy(caps), device)
    inputs = {
        "input_ids": txt_all.index_select(0, rows)[:, : max(txt_lens)],
        "position_ids": _to_device(lay["position_ids"], device),
        "img_feat": img_feat,
        "img_pos_feat": img_pos,
        "attn_masks": _to_device(lay["attn_masks"], device),
        "gather_index": _to_device(lay["gather_index"], device),
        "img_index": _to_device(img_index, device),
    }
    cols = _to_device(torch.tensor([image for image, c in batch for _ in range(len(c))]), device)
    return inputs, rows, cols


@torch.no_grad()
def score_matrix(model: torch.nn.Module, txt_db: TxtDb | str, img_db: ImgDb | str, *,
                 batch_size: int = 400, amp_dtype: torch.dtype | None = None,
                 progress: bool = True) -> ScoreMatrix:
    """Score every caption of ``txt_db`` against every image its captions use.

    Runs on the model's device. Under an initialised process group, rank ``r``
    scores images ``r, r + W, ...`` and every rank receives the full matrix.
    Each image is decoded once; a batch holds ``batch_size`` pairs, grouped by
    image, with padding kept small by sorting captions by length.

    Args:
        model: a :class:`UniterForRetrieval` (or DDP around one).
        txt_db, img_db: databases or their paths (paths open every caption and
            the default detector setting).
        batch_size: pairs per forward pass.
        amp_dtype: run under ``torch.autocast`` with this dtype (None: no autocast).
        progress: show a tqdm bar on rank 0.
    """
    if isinstance(model, DistributedDataParallel):
        model = model.module
    if not isinstance(model, UniterForRetrieval):
        raise TypeError(f"model must be a UniterForRetrieval, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    txt_db, img_db = _open_dbs(txt_db, img_db)
    start_time = time.perf_counter()
    device = next(model.parameters()).device
    cfg = model.config

    # Captions: every one, [CLS] ids [SEP], checked against the model's tables.
    txt_ids = list(txt_db.ids)
    if not txt_ids:
        raise ValueError(f"txt_db {txt_db.path} holds no caption")
    tokens = [txt_db.combine_inputs(txt_db.input_ids(t)) for t in txt_ids]
    lens = np.array([len(t) for t in tokens], dtype=np.int64)
    for txt_id, tok in zip(txt_ids, tokens):
        if int(tok.max()) >= cfg.vocab_size:
            raise ValueError(f"txt_db {txt_db.path}: caption {txt_id!r} has token id {int(tok.max())} "
                             f">= vocab_size {cfg.vocab_size} of the model config")
    if int(lens.max()) > cfg.max_position_embeddings:
        raise ValueError(f"txt_db {txt_db.path}: a caption has {int(lens.max())} tokens with [CLS]/[SEP], "
                         f"more than max_position_embeddings={cfg.max_position_embeddings}")
    img_fnames = sorted({txt_db.txt2img[t] for t in txt_ids})
    for fname in img_fnames:
        if fname not in img_db:
            raise MissingRecordError(
                f"image {fname!r} (of txt_db {txt_db.path}) not in img_db {img_db.path}",
                db_path=img_db.path, key=fname)
    col = {fname: j for j, fname in enumerate(img_fnames)}
    gt = torch.tensor([col[txt_db.txt2img[t]] for t in txt_ids], dtype=torch.long)

    rank, world = _dist.rank(), _dist.world_size()
    mine = img_fnames[rank::world]
    n_txt = len(txt_ids)
    txt_all = _to_device(torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True), device)
    order = np.argsort(-lens, kind="stable")
    shard = torch.zeros(n_txt, len(mine), dtype=torch.float32, device=device)

    was_training = model.training
    model.eval()
    regions: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    bar = tqdm(total=n_txt * len(mine), unit="pair", desc="scoring", disable=not progress or rank != 0,
               dynamic_ncols=True)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else torch.autocast(device.type, enabled=False))
    try:
        for batch in _pair_batches(len(mine), n_txt, order, batch_size):
            for image, _ in batch:
                if image not in regions:  # decoded and moved to the device once
                    feat, boxes = img_db[mine[image]]
                    regions[image] = (_to_device(feat, device), _to_device(boxes, device))
            inputs, rows, cols = _model_inputs(batch, regions, lens, txt_all, model.img_dim)
            with autocast:
                logits = model(**inputs).logits
            shard.index_put_((rows, cols), logits.float())
            last = batch[-1][0]
            for image in [i for i in regions if i < last]:  # images are visited in order
                del regions[image]
            bar.update(len(rows))
    finally:
        bar.close()
        model.train(was_training)

    if world > 1:
        on_cpu = torch.distributed.get_backend() == "gloo"
        full = _dist.gather_columns(shard.cpu() if on_cpu else shard, len(img_fnames))
    else:
        full = shard
    scores = full.cpu()
    return ScoreMatrix(scores, txt_ids, img_fnames, gt, time.perf_counter() - start_time)


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


def evaluate_retrieval(model: torch.nn.Module, txt_db: TxtDb | str, img_db: ImgDb | str, *,
                       batch_size: int = 400, amp_dtype: torch.dtype | None = None,
                       progress: bool = True) -> dict[str, float]:
    """Full-ranking retrieval metrics of ``model`` on one split.

    Call it on every rank of a process group (each scores a shard of the
    images); every rank returns the same dict: the recalls of
    :func:`compute_recalls` plus ``n_captions``, ``n_images``, ``n_pairs``,
    ``seconds`` and ``pairs_per_s``. See :func:`score_matrix` for the arguments.
    """
    result = score_matrix(model, txt_db, img_db, batch_size=batch_size, amp_dtype=amp_dtype,
                          progress=progress)
    metrics = compute_recalls(result.scores, result.gt)
    n_pairs = result.scores.numel()
    metrics.update(n_captions=len(result.txt_ids), n_images=len(result.img_fnames), n_pairs=n_pairs,
                   seconds=result.seconds, pairs_per_s=n_pairs / max(result.seconds, 1e-9))
    return metrics


# ------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m integrations.uniter.evaluate",
        description="Full-ranking image-text retrieval evaluation of a UNITER checkpoint "
                    "(R@1/5/10 both ways and RSUM). Run under torchrun to shard over processes.")
    p.add_argument("--config", help="original training config JSON (train-itm-*-hn.json)")
    p.add_argument("--checkpoint", required=True, help="model weights (.pt or .safetensors)")
    p.add_argument("--model-config", help="model config JSON (default: the config's model_config)")
    p.add_argument("--txt-db", help="txt_db directory (default: the config's <split>_txt_db)")
    p.add_argument("--img-db", help="img_db directory (default: the config's <split>_img_db)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="which split of the config")
    p.add_argument("--output", help="write the results JSON here (rank 0)")
    p.add_argument("--save-scores", help="also save the score matrix here (torch.save, rank 0)")
    p.add_argument("--batch-size", type=int, help="pairs per forward pass (default: inf_minibatch_size)")
    p.add_argument("--device", help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="autocast dtype; auto = fp16 on CUDA when the config says fp16, else fp32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _resolve(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """``(train config, txt_db path, img_db path, model config path, batch size)`` from the CLI.

    Shared by the isda and visualize commands; ``args`` needs ``config``,
    ``split``, ``txt_db``, ``img_db``, ``model_config`` (``batch_size`` optional).
    """
    cfg = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    cfg_txt, cfg_img = cfg.split_dbs(args.split)
    txt_path, img_path = args.txt_db or cfg_txt, args.img_db or cfg_img
    model_config = args.model_config or cfg.model_config
    for value, flag, key in ((txt_path, "--txt-db", f"{args.split}_txt_db"),
                             (img_path, "--img-db", f"{args.split}_img_db"),
                             (model_config, "--model-config", "model_config")):
        if not value:
            parser.error(f"no {key} in the config; pass {flag}")
    if not os.path.isfile(model_config):
        parser.error(f"model config not found: {model_config} (pass --model-config)")
    batch_size = getattr(args, "batch_size", None)  # isda/visualize reuse this without --batch-size
    batch_size = batch_size if batch_size is not None else cfg.inf_minibatch_size
    if batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {batch_size}")
    return cfg, txt_path, img_path, model_config, batch_size


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    cfg, txt_path, img_path, model_config, batch_size = _resolve(args, parser)
    ctx = _dist.init_from_env(args.device)
    logging.basicConfig(level=logging.INFO if ctx.rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {ctx.rank}] %(levelname)s %(message)s")
    try:
        precision = args.precision
        if precision == "auto":
            precision = "fp16" if ctx.device.type == "cuda" and cfg.fp16 else "fp32"
        model = UniterForRetrieval(UniterModelConfig.from_json(model_config))
        load_checkpoint(model, args.checkpoint)
        model.to(ctx.device)
        txt_db = TxtDb(txt_path, max_txt_len=-1)
        img_db = ImgDb(img_path, conf_th=cfg.conf_th, max_bb=cfg.max_bb, min_bb=cfg.min_bb,
                       compressed=cfg.compressed_db)
        result = score_matrix(model, txt_db, img_db, batch_size=batch_size,
                              amp_dtype=_PRECISIONS[precision], progress=not args.no_progress)
        metrics = compute_recalls(result.scores, result.gt)
        n_pairs = result.scores.numel()
        pairs_per_s = n_pairs / max(result.seconds, 1e-9)
        if ctx.rank == 0:
            report = {
                "split": args.split, "txt_db": txt_path, "img_db": img_path,
                "checkpoint": args.checkpoint, "model_config": model_config,
                "metrics": metrics, "n_captions": len(result.txt_ids),
                "n_images": len(result.img_fnames), "n_pairs": n_pairs,
                "seconds": result.seconds, "pairs_per_s": pairs_per_s,
                "world_size": ctx.world_size, "batch_size": batch_size,
                "precision": precision, "device": str(ctx.device),
            }
            text = json.dumps(report, indent=2)
            print(text)
            if args.output:
                os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
                with open(args.output, "w", encoding="utf-8") as handle:
                    handle.write(text + "\n")
            if args.save_scores:
                torch.save({"scores": result.scores, "txt_ids": result.txt_ids,
                            "img_fnames": result.img_fnames, "gt": result.gt}, args.save_scores)
            print(f"scored {n_pairs} pairs in {result.seconds:.2f} s: {pairs_per_s:.0f} pairs/s "
                  f"({ctx.world_size} process(es), {ctx.device}, {precision})", file=sys.stderr)
    finally:
        _dist.teardown(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
