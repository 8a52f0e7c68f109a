"""Full-ranking image-text retrieval evaluation of a UNITER checkpoint (every caption against every image).

Command line (from a checkout)::

    python -m integrations.uniter.evaluate --config train-itm-flickr-base-8gpu-hn.json \\
        --checkpoint ckpt/model_step_5000.pt --model-config uniter-base.json --output results.json

    torchrun --nproc_per_node=8 -m integrations.uniter.evaluate ...   # sharded over images

The metrics are those of :mod:`integrations.retrieval.evaluation` (R@1/5/10
both ways and RSUM); the results JSON is printed and, with ``--output``,
written.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import torch

from ..retrieval import compute_recalls, score_matrix
from ..retrieval import distributed, runtime
from ..retrieval.cli import CommandParser, run_command, setup_logging, write_text
from .cli import Split, add_split_arguments, open_split

__all__ = ["main"]


def _parser() -> CommandParser:
    p = CommandParser(
        prog="python -m integrations.uniter.evaluate",
        description="Full-ranking image-text retrieval evaluation of a UNITER checkpoint "
                    "(R@1/5/10 both ways and RSUM). Run under torchrun to shard over processes.")
    add_split_arguments(p)
    p.add_argument("--output", help="write the results JSON here (rank 0)")
    p.add_argument("--save-scores", help="also save the score matrix here (torch.save, rank 0)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="autocast dtype; auto = on CUDA when the config says fp16: bf16 where supported, else fp16; "
                        "fp32 otherwise")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="check the split's databases, the model config and the checkpoint, print what would be "
                        "scored and exit without scoring")
    return p


def evaluate(split: Split, args: argparse.Namespace) -> int:
    """Score the split on every process, report on rank 0."""
    with runtime.process(args.device) as ctx:
        precision = runtime.resolve_precision(args.precision, split.opts.fp16, ctx.device)
        pairs = split.open()
        try:
            model = split.plugin.build_model(checkpoint=args.checkpoint).to(ctx.device)
            result = score_matrix(model, pairs, split.plugin.collate, batch_size=split.batch_size,
                                  amp_dtype=runtime.AMP_DTYPES.get(precision), progress=not args.no_progress)
        finally:
            pairs.close()
        if distributed.rank() == 0:
            _report(result, split, args, precision, str(ctx.device))
    return 0


def dry_run(split: Split, args: argparse.Namespace) -> int:
    """Open the split and decode its first caption and image, load the weights; print what would be scored."""
    device = distributed.default_device(args.device)
    precision = runtime.resolve_precision(args.precision, split.opts.fp16, device)
    pairs = split.open()  # every image a caption refers to must be in the img_db
    try:
        pairs.caption(0), pairs.image(0)
        n_txt, n_img = pairs.n_captions, pairs.n_images
    finally:
        pairs.close()
    model = split.plugin.build_model(checkpoint=args.checkpoint)
    n_pairs = n_txt * n_img
    print(f"dry run: every check passed; nothing was scored\n"
          f"  split:     {args.split}: {n_txt} captions x {n_img} images = {n_pairs:,} pairs "
          f"({split.txt_db}, {split.img_db})\n"
          f"  model:     {sum(p.numel() for p in model.parameters()):,} parameters from {args.checkpoint}\n"
          f"  batches:   {split.batch_size} pairs per forward, {-(-n_pairs // split.batch_size):,} forwards in all\n"
          f"  precision: {precision} on {device}", flush=True)
    return 0


def _report(result, split: Split, args: argparse.Namespace, precision: str, device: str) -> None:
    n_pairs = result.scores.numel()
    pairs_per_s = n_pairs / max(result.seconds, 1e-9)
    report = {
        "split": args.split, "txt_db": split.txt_db, "img_db": split.img_db, "checkpoint": args.checkpoint,
        "model_config": split.plugin.data.model_config, "metrics": compute_recalls(result.scores, result.gt),
        "n_captions": len(result.txt_ids), "n_images": len(result.img_fnames), "n_pairs": n_pairs,
        "seconds": result.seconds, "pairs_per_s": pairs_per_s, "world_size": distributed.world_size(),
        "batch_size": split.batch_size, "precision": precision, "device": device,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        write_text(args.output, text + "\n")
    if args.save_scores:
        torch.save({"scores": result.scores, "txt_ids": result.txt_ids, "img_fnames": result.img_fnames,
                    "gt": result.gt}, args.save_scores)
    print(f"scored {n_pairs} pairs in {result.seconds:.2f} s: {pairs_per_s:.0f} pairs/s "
          f"({distributed.world_size()} process(es), {device}, {precision})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    split = open_split(args, parser)
    setup_logging()
    return run_command(lambda: (dry_run if args.dry_run else evaluate)(split, args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
