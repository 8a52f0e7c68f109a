"""Hard-negative retrieval fine-tuning of UNITER, with or without IAIS.

Command line (from a checkout)::

    python -m integrations.uniter.finetune                       # no arguments: the built-in synthetic demo

    python -m integrations.uniter.finetune --config config/train-itm-flickr-base-8gpu-hn.json \\
        --model-config config/uniter-base.json --checkpoint pretrained/uniter-base.pt \\
        --output-dir runs/flickr-iais --iais singular

    torchrun --nproc_per_node=8 -m integrations.uniter.finetune --config ... --iais singular
    torchrun --nproc_per_node=2 -m integrations.uniter.finetune --config ... --num-gpus-equivalent 8

    python -m integrations.uniter.finetune --config ... --output-dir runs/flickr-iais --resume auto

    python -m integrations.uniter.finetune --config ... --output-dir runs/x --dry-run 8   # check, print the plan

The config is an original ``train-itm-*-hn.json`` file, read unchanged; every
key is also a flag (``--train-batch-size``), and flags override the file. See
``docs/finetune.md`` for the recipe, the batch arithmetic, checkpoints and
outputs.

Exit status: 0 when the run finished or stopped on request (SIGTERM/SIGINT,
``--stop-after``) with a checkpoint; 1 when a loss became NaN/inf (or on a
bug, with its traceback); 2 for a user error, in one line ``error: ...``
(bad flag or config value, missing or damaged file or database, output
directory that cannot be written or that another run is using). ``--debug``
prints the traceback of any error.
"""

from __future__ import annotations

import sys
from typing import Sequence

from ..retrieval import TrainResult, dry_run, format_plan, options_parser, parse_options, train
from ..retrieval.cli import run_command, setup_logging
from ..retrieval.options import TrainOptions
from .config import CONFIG_ALIASES, UniterData
from .plugin import UniterPlugin

__all__ = ["main", "build_parser", "parse", "run", "print_plan"]


def build_parser():
    """The command line: one flag per :class:`TrainOptions` and :class:`UniterData` field, ``--config``, ``--set``."""
    return options_parser(
        TrainOptions, UniterData, prog="python -m integrations.uniter.finetune",
        description="Hard-negative image-text retrieval fine-tuning of UNITER with the IAIS relation-alignment "
                    "regularizer (Ren et al., ACL 2021). Without any argument, runs the built-in synthetic demo. "
                    "Run under torchrun for several processes (DDP).")


def parse(argv: Sequence[str], parser=None) -> tuple[TrainOptions, UniterPlugin]:
    """``argv`` as the run's options and plug-in: defaults < ``--config`` < ``--set`` < flags.

    Every problem is a usage error (one line, exit status 2). ``parser``: the
    :func:`build_parser` to use (it remembers ``--debug``).
    """
    parser = parser or build_parser()
    opts, data = parse_options(parser, argv, TrainOptions, UniterData, aliases=CONFIG_ALIASES)
    if not data.model_config:
        parser.error("no model config: pass --model-config (or set model_config in the config)")
    if not opts.output_dir:
        parser.error("no output directory: pass --output-dir (or set output_dir in the config)")
    if not data.train_txt_dbs:
        parser.error("no training data: pass --txt-db/--img-db (or train_txt_dbs/train_img_dbs in the config)")
    try:
        plugin = UniterPlugin(data)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    return opts, plugin


def run(argv: Sequence[str]) -> tuple[int, TrainResult | None]:
    """Parse ``argv`` and train; returns ``(exit status, result or None)``."""
    parser = build_parser()
    opts, plugin = parse(argv, parser)
    setup_logging()
    result: list[TrainResult] = []

    def body() -> int:
        if opts.dry_run is not None:
            print_plan(dry_run(opts, plugin, world=opts.dry_run or None))
            return 0
        result.append(train(opts, plugin))
        return 0

    status = run_command(body, debug=parser.debug)
    return status, (result[0] if result else None)


def print_plan(plan: dict) -> None:
    """The engine's plan of a dry run, plus what UNITER adds: weights, model config, batch layout."""
    data = plan["plugin"]["data"]
    layout = {"clean": "clean (each row's regions right after its own text)",
              "original": "original (the authors' no-IAIS from-image batches: the paper's baseline)"}
    print(format_plan(plan))
    print(f"  weights:   {data['checkpoint'] or 'none (random initialisation)'}; model config {data['model_config']}")
    print(f"  layout:    {layout[data['baseline_layout']]}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; with no argument at all, the built-in demo."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        from .demo import main as demo_main

        return demo_main([])
    return run(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
