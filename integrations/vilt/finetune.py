"""Hard-negative retrieval fine-tuning of ViLT, with or without IAIS.

Command line (from a checkout)::

    python -m integrations.vilt.finetune --model dandelin/vilt-b32-mlm \\
        --karpathy-json dataset_flickr30k.json --image-root flickr30k-images \\
        --config integrations/vilt/configs/flickr30k.json --output-dir runs/vilt-iais --iais singular

    torchrun --nproc_per_node=8 -m integrations.vilt.finetune ... --iais singular
    python -m integrations.vilt.finetune ... --output-dir runs/vilt-iais --resume auto

Every field of the engine's :class:`~integrations.retrieval.TrainOptions`
(the recipe, IAIS, precision, checkpoints, TensorBoard) and of
:class:`~.config.ViltData` (model, data) is a flag and a config-file key;
flags override ``--set`` which overrides the ``--config`` file. See
``docs/vilt.md``.

Exit status: 0 when the run finished or stopped on request with a
checkpoint; 1 when a loss became NaN/inf (or on a bug, with its traceback);
2 for a user error, in one line ``error: ...`` (bad flag or config value,
missing or unreadable file, output directory that cannot be written or that
another run is using). ``--debug`` prints the traceback of any error.
"""

from __future__ import annotations

import sys
from typing import Sequence

from ..retrieval import TrainResult, train
from ..retrieval.cli import run_command, setup_logging
from ..retrieval.options import TrainOptions
from .cli import Command, parse_command
from .config import ViltData
from .plugin import ViltPlugin

__all__ = ["main", "parse", "run"]


def _command(argv: Sequence[str]) -> Command:
    return parse_command(
        argv, ViltData, TrainOptions, prog="python -m integrations.vilt.finetune",
        description="Hard-negative image-text retrieval fine-tuning of a Hugging Face ViLT with the IAIS "
                    "relation-alignment regularizer (Ren et al., ACL 2021) on a Karpathy split file and an image "
                    "folder. Run under torchrun for several processes (DDP).",
        needs=("karpathy_json", "image_root", "output_dir"))


def parse(argv: Sequence[str]) -> tuple[TrainOptions, ViltPlugin]:
    """``argv`` as the run's options and plug-in: defaults < ``--config`` < ``--set`` < flags.

    Every problem is a usage error (one line, exit status 2).
    """
    (_, opts), plugin, _ = _command(argv)
    return opts, plugin


def run(argv: Sequence[str]) -> tuple[int, TrainResult | None]:
    """Parse ``argv`` and train; ``(exit status, result or None)``."""
    (_, opts), plugin, debug = _command(argv)
    setup_logging()
    results: list[TrainResult] = []
    status = run_command(lambda: results.append(train(opts, plugin)) or 0, debug=debug)
    return status, (results[0] if results else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    return run(sys.argv[1:] if argv is None else list(argv))[0]


if __name__ == "__main__":
    sys.exit(main())
