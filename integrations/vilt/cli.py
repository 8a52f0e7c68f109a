"""What the ViLT commands share.

Their flags are derived from dataclasses (:func:`parse_command`, through the
engine's :func:`integrations.retrieval.options_parser`): the model settings
(:class:`~.config.ViltSettings` or :class:`~.config.ViltData`), then the
engine's ``TrainOptions`` (``finetune``) or the scoring settings
(:class:`ScoreOptions`, ``evaluate``, ``isda``, ``winoground``) and the
command's own. Every problem with them is a usage error (exit status 2).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch

from ..retrieval import options_parser, parse_options, runtime
from ..retrieval.options import check_types
from .config import ViltSettings
from .data import DataFileError, ImageReadError
from .plugin import ViltPlugin

__all__ = ["ScoreOptions", "USER_ERRORS", "parse_command", "scoring_precision", "write_report", "device_of"]

#: the plug-in's errors that are the user's to fix, next to the engine's
USER_ERRORS = (DataFileError, ImageReadError)


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
        if self.batch_size < 1:
            raise ValueError(f"key 'batch_size' must be >= 1, got {self.batch_size}")


def parse_command(argv: Sequence[str] | None, *classes: type, prog: str, description: str,
                  needs: Sequence[str] = ()) -> tuple[list, ViltPlugin]:
    """Parse ``argv`` into one instance per dataclass (the first one a :class:`ViltSettings`) and the plug-in.

    ``needs`` names fields that must be set. Exits with status 2
    (``parser.error``) on any problem, a missing model included.
    """
    if not (classes and issubclass(classes[0], ViltSettings)):
        raise TypeError("parse_command: the first dataclass must be ViltSettings or a subclass")
    parser = options_parser(*classes, prog=prog, description=description)
    parsed = parse_options(parser, sys.argv[1:] if argv is None else list(argv), *classes)
    for name in ("model", *needs):
        if not any(getattr(obj, name, None) for obj in parsed):
            parser.error(f"missing --{name.replace('_', '-')}")
    settings = parsed[0]
    try:
        plugin = ViltPlugin(settings)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    return parsed, plugin


def scoring_precision(options: ScoreOptions, device: torch.device) -> tuple[str, torch.dtype | None]:
    """The precision of a scoring run on ``device`` and its autocast dtype (None: full precision)."""
    precision = runtime.resolve_precision(options.precision, True, device)
    return precision, runtime.AMP_DTYPES.get(precision)


def write_report(report: dict, path: str | None) -> str:
    """Print ``report`` as JSON on stdout and, with ``path``, write it there; the JSON text."""
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return text


def device_of(options: ScoreOptions) -> torch.device:
    """The device of a single-process scoring command."""
    return torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
