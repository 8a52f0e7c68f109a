"""Full-ranking image-text retrieval evaluation of a ViLT model (every caption against every image).

Command line (from a checkout)::

    python -m integrations.vilt.evaluate --model dandelin/vilt-b32-finetuned-flickr30k \\
        --karpathy-json dataset_flickr30k.json --image-root flickr30k-images --split test --output results.json

    python -m integrations.vilt.evaluate --model dandelin/vilt-b32-mlm \\
        --checkpoint runs/vilt-iais/ckpt/model_step_5000_final.pt ...     # weights of a fine-tuning run

    torchrun --nproc_per_node=8 -m integrations.vilt.evaluate ...        # sharded over images

The metrics are the engine's (:mod:`integrations.retrieval.evaluation`): R@1/5/10
both ways and RSUM. Each image is read and processed once per process and
its patches embedded once per batch; a batch holds one image's captions
(or the end of one image's and the start of the next one's).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch

from ..retrieval import compute_recalls, distributed, runtime, score_matrix
from ..retrieval.cli import run_command, setup_logging
from ..retrieval.objective import SetupError
from .cli import ScoreOptions, parse_command, scoring_precision, write_report
from .config import ViltData
from .plugin import ViltPlugin

__all__ = ["EvalSplit", "main"]


@dataclass
class EvalSplit:
    """Which split is scored, and where the score matrix goes."""

    _argument_group_name = "evaluation"

    split: Literal["test", "val"] = field(default="test", metadata={"help": "the split of the Karpathy file"})
    save_scores: str | None = field(default=None, metadata={
        "help": "also save the score matrix here (torch.save, rank 0)", "metavar": "PATH"})


def evaluate(plugin: ViltPlugin, options: ScoreOptions, which: EvalSplit) -> int:
    """Score the split on every process of the job and report on rank 0."""
    with runtime.process(options.device) as ctx:
        precision, amp_dtype = scoring_precision(options, ctx.device)
        pairs = plugin.eval_pairs(which.split)
        if pairs is None:
            raise SetupError(f"{plugin.data.karpathy_json} has no image in split {which.split!r}")
        model = plugin.build_model(checkpoint=options.checkpoint).to(ctx.device)
        result = score_matrix(model, pairs, plugin.collate, batch_size=options.batch_size, amp_dtype=amp_dtype,
                              progress=options.progress)
        if distributed.rank() == 0:
            n_pairs = result.scores.numel()
            write_report({"split": which.split, "karpathy_json": plugin.data.karpathy_json,
                          "model": plugin.data.model, "checkpoint": options.checkpoint,
                          "metrics": compute_recalls(result.scores, result.gt), "n_captions": len(result.txt_ids),
                          "n_images": len(result.img_fnames), "n_pairs": n_pairs, "seconds": result.seconds,
                          "pairs_per_s": n_pairs / max(result.seconds, 1e-9),
                          "world_size": distributed.world_size(), "precision": precision,
                          "device": str(ctx.device)}, options.output)
            if which.save_scores:
                torch.save({"scores": result.scores, "txt_ids": result.txt_ids, "img_fnames": result.img_fnames,
                            "gt": result.gt}, which.save_scores)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    (data, options, which), plugin, debug = parse_command(
        argv, ViltData, ScoreOptions, EvalSplit, prog="python -m integrations.vilt.evaluate",
        description="Full-ranking image-text retrieval evaluation of a Hugging Face ViLT (R@1/5/10 both ways and "
                    "RSUM) on a split of a Karpathy file. Run under torchrun to shard over processes.",
        needs=("karpathy_json", "image_root"))
    setup_logging()
    return run_command(lambda: evaluate(plugin, options, which), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
