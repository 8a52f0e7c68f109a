"""What the ViLT commands share.

Their flags are derived from dataclasses (:func:`parse_command`, through the
engine's :func:`integrations.retrieval.options_parser`): the model settings
(:class:`~.config.ViltSettings` or :class:`~.config.ViltData`), then the
engine's ``TrainOptions`` (``finetune``) or the scoring settings
(:class:`ScoreOptions`, ``evaluate``, ``isda``, ``winoground``) and the
command's own. Every problem with them is a usage error: one line ``error:
...``, exit status 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Sequence

import torch

from ..retrieval import distributed, options_parser, parse_options, runtime
from ..retrieval.cli import check_outputs, write_text
from ..retrieval.options import check_ranges, check_types
from .config import ViltSettings
from .plugin import ViltPlugin

__all__ = ["ScoreOptions", "Command", "parse_command", "scoring_precision", "write_report", "device_of"]


@dataclass
class ScoreOptions:
    """How a scoring command runs."""

    _argument_group_name = "scoring"

    checkpoint: str | None = field(default=None, metadata={
        "help": "weights saved by a fine-tuning run (.pt or .safetensors), loaded on top of --model",
        "metavar": "PATH"})
    batch_size: int = field(default=64, metadata={"help": "pairs per forward pass"})
    precision: Literal["auto", "fp32", "fp16", "bf16"] = field(default="auto", metadata={
        "help": "autocast dtype; auto = the engine's mixed precision on CUDA (bf16 where supported, else fp16), "
                "fp32 on the CPU"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda:LOCAL_RANK when "
                                                                "available, else cpu)"})
    output: str | None = field(default=None, metadata={"help": "write the results JSON here", "metavar": "PATH"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self) -> None:
        check_types(self)
        check_ranges(self, {"batch_size": ">= 1"})


class Command(NamedTuple):
    """A parsed command line: one instance per dataclass, the plug-in, and whether ``--debug`` was given."""

    parsed: list
    plugin: ViltPlugin
    debug: bool


def parse_command(argv: Sequence[str] | None, *classes: type, prog: str, description: str,
                  needs: Sequence[str] = ()) -> Command:
    """Parse ``argv`` into one instance per dataclass (the first one a :class:`ViltSettings`) and the plug-in.

    ``needs`` names fields that must be set. Exits with status 2
    (``parser.error``) on any problem, a missing model included, and an
    ``--output`` or ``--save-scores`` path that cannot be written.
    """
    if not (classes and issubclass(classes[0], ViltSettings)):
        raise TypeError("parse_command: the first dataclass must be ViltSettings or a subclass")
    parser = options_parser(*classes, prog=prog, description=description)
    parsed = parse_options(parser, sys.argv[1:] if argv is None else list(argv), *classes)
    for name in ("model", *needs):
        if not any(getattr(obj, name, None) for obj in parsed):
            parser.error(f"missing --{name.replace('_', '-')}")
    check_outputs(parser, {f"--{name.replace('_', '-')}": getattr(obj, name) for obj in parsed
                           for name in ("output", "save_scores") if hasattr(obj, name)})
    try:
        plugin = ViltPlugin(parsed[0])
    except (OSError, ValueError) as err:
        parser.error(str(err))
    return Command(parsed, plugin, parser.debug)


def scoring_precision(options: ScoreOptions, device: torch.device) -> tuple[str, torch.dtype | None]:
    """The precision of a scoring run on ``device`` and its autocast dtype (None: full precision)."""
    precision = runtime.resolve_precision(options.precision, True, device)
    return precision, runtime.AMP_DTYPES.get(precision)


def write_report(report: dict, path: str | None) -> str:
    """Print ``report`` as JSON on stdout and, with ``path``, write it there; the JSON text."""
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if path:
        write_text(path, text + "\n")
    return text


def device_of(options: ScoreOptions) -> torch.device:
    """The device of a single-process scoring command."""
    return distributed.default_device(options.device)
