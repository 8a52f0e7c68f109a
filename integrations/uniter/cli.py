"""What the UNITER commands that read one split share: its flags and how they resolve.

``evaluate``, ``isda`` and ``visualize`` take an original training config (for
the split's databases, the detector setting, the model config and
``inf_minibatch_size``) and flags that override it. Their parsers are the
engine's :class:`~integrations.retrieval.cli.CommandParser` (one-line usage
errors, ``--debug``).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from ..retrieval.cli import check_outputs
from ..retrieval.options import TrainOptions
from .config import UniterData, read_train_config
from .plugin import UniterPairs, UniterPlugin

__all__ = ["add_split_arguments", "Split", "open_split"]


def add_split_arguments(parser: argparse.ArgumentParser, *, checkpoints: str = "one") -> None:
    """``--config``, ``--checkpoint`` (``checkpoints="many"``: repeatable), ``--model-config``,
    ``--txt-db``, ``--img-db``, ``--split``, ``--batch-size``, ``--device``."""
    parser.add_argument("--config", help="original training config JSON (train-itm-*-hn.json)")
    if checkpoints == "many":
        parser.add_argument("--checkpoint", action="append", required=True,
                            help="model weights (.pt or .safetensors); repeat for several")
    else:
        parser.add_argument("--checkpoint", required=True, help="model weights (.pt or .safetensors)")
    parser.add_argument("--model-config", help="model config JSON (default: the config's model_config)")
    parser.add_argument("--txt-db", help="txt_db directory (default: the config's <split>_txt_db)")
    parser.add_argument("--img-db", help="img_db directory (default: the config's <split>_img_db)")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="which split of the config")
    parser.add_argument("--batch-size", type=int, help="pairs per forward pass (default: inf_minibatch_size)")
    parser.add_argument("--device", help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")


@dataclass
class Split:
    """A resolved split: the recipe settings, the plug-in and the split's databases."""

    opts: TrainOptions
    plugin: UniterPlugin
    txt_db: str
    img_db: str
    batch_size: int

    def open(self) -> UniterPairs:
        """The split's captions and images (databases opened)."""
        return self.plugin.open_split(self.txt_db, self.img_db)


def open_split(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Split:
    """The split named by ``args`` (see :func:`add_split_arguments`); usage errors exit with status 2, also for
    an ``--output`` or ``--save-scores`` path that cannot be written."""
    check_outputs(parser, {"--output": getattr(args, "output", None),
                           "--save-scores": getattr(args, "save_scores", None)})
    try:
        opts, data = read_train_config(args.config) if args.config else (TrainOptions(), UniterData())
    except (OSError, ValueError) as err:
        parser.error(str(err))
    cfg_txt, cfg_img = data.split_dbs(args.split)
    txt_path, img_path = args.txt_db or cfg_txt, args.img_db or cfg_img
    model_config = args.model_config or data.model_config
    for value, flag, key in ((txt_path, "--txt-db", f"{args.split}_txt_db"),
                             (img_path, "--img-db", f"{args.split}_img_db"),
                             (model_config, "--model-config", "model_config")):
        if not value:
            parser.error(f"no {key} in the config; pass {flag}")
    batch_size = args.batch_size if args.batch_size is not None else opts.inf_minibatch_size
    if batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {batch_size}")
    try:
        plugin = UniterPlugin(dataclasses.replace(data, model_config=model_config))
    except (OSError, ValueError) as err:
        parser.error(f"{err} (pass --model-config)")
    return Split(opts, plugin, txt_path, img_path, batch_size)
