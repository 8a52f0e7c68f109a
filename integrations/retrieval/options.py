"""The options of a fine-tuning run, and how they are read from config files and flags.

:class:`TrainOptions` holds everything the engine needs: the hard-negative
recipe (field names are the keys of the original UNITER training configs, e.g.
``train_batch_size``, ``negative_size``), the IAIS settings and how to run
(precision, checkpoints, output). A model plug-in adds a dataclass of its own
(its data and weights). Both are read the same way:

- :func:`load_config` reads an original JSON config: each key goes to the
  dataclass field of the same name, checked against the field's type (errors
  name the file and the key); a file whose name gives the GPU count of its
  recipe (``train-itm-flickr-base-8gpu-hn.json``) makes that count the
  default of ``num_gpus_equivalent`` (:func:`gpus_named_by`), so that a run
  on fewer processes keeps the recipe's batch;
- :func:`options_parser` derives the command line from the dataclasses'
  fields (``transformers.HfArgumentParser``: ``--train-batch-size``, ``--no-progress``,
  ...) plus ``--config`` and ``--set KEY=JSON``, and :func:`parse_options`
  layers them: defaults < config file < ``--set`` < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import operator
import os
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, NamedTuple, Sequence

import iaisreg

__all__ = ["TrainOptions", "OptionError", "check_types", "check_ranges", "in_range", "load_config", "read_json_object",
           "gpus_named_by", "CommandParser", "options_parser", "parse_options"]

# the IAIS choices come from the library's own options table
_IAIS = Literal[("none",) + iaisreg.OPTIONS["mode"].choices]
_VARIANT = Literal[iaisreg.OPTIONS["variant"].choices]
_ANCHOR = Literal[("policy",) + iaisreg.OPTIONS["anchor"].choices]
_SCHEDULE = Literal[iaisreg.SCHEDULES]


def _opt(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its command-line help (and other argparse keywords)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class TrainOptions:
    """A hard-negative retrieval fine-tuning run (see ``docs/finetune.md``).

    The recipe fields default to the released Flickr30k hard-negative config
    (``train-itm-flickr-base-8gpu-hn.json``).
    """

    _argument_group_name = "recipe, IAIS and run (original config keys keep their names)"

    # -- the recipe: original config keys
    output_dir: str | None = _opt(None, "run directory (ckpt/, log/, results/)")
    num_train_steps: int = _opt(5000, "optimizer steps")
    train_batch_size: int = _opt(8, "groups accumulated per optimizer step per GPU of the recipe")
    negative_size: int = _opt(399, "random negatives scored per group")
    hard_neg_size: int = _opt(31, "hardest negatives kept per group")
    inf_minibatch_size: int = _opt(400, "pairs per forward pass when mining and evaluating")
    margin: float = _opt(0.2, "margin of the ranking loss")
    learning_rate: float = _opt(5e-5, "peak learning rate")
    warmup_steps: int = _opt(500, "linear warm-up steps, then linear decay")
    valid_steps: int = _opt(500, "validate (and save the weights) every N steps")
    optim: Literal["adamw", "adam", "adamax"] = _opt("adamw", "optimizer")
    optim_impl: Literal["torch", "uniter"] = _opt(
        "torch", "torch: torch.optim.AdamW, every LayerNorm exempt from weight decay; uniter: UNITER's own AdamW "
                 "update and its name-based decay groups, exactly as the original")
    betas: list[float] = _opt([0.9, 0.98], "Adam betas")
    weight_decay: float = _opt(0.01, "weight decay (not on biases and LayerNorm weights)")
    grad_norm: float = _opt(2.0, "gradient-norm clip (<= 0: none)")
    dropout: float = _opt(0.1, "dropout of the model")
    seed: int = _opt(42, "random seed")
    fp16: bool = _opt(True, "mixed precision on CUDA under --precision auto (bf16 where supported, else fp16)")
    full_val: bool = _opt(True, "full-ranking validation every valid_steps")
    n_workers: int = _opt(4, "data-preparation worker processes")
    pin_mem: bool = _opt(True, "pinned-memory batches on CUDA")
    # -- IAIS
    iais: _IAIS = _opt("none", "the relation-alignment regularizer")
    iais_variant: _VARIANT = _opt("official", "the authors' code or the printed equations (docs/semantics.md)")
    iais_anchor: _ANCHOR = _opt("policy", "policy = V on from-image groups, L on from-text groups (the authors)")
    iais_schedule: _SCHEDULE = _opt("exp", "lambda_t annealing (paper Eq. 16)")
    iais_gamma: float = _opt(5.0, "gamma of the exp/log schedules")
    iais_weight: float = _opt(1.0, "constant factor on lambda_t")
    # -- how to run
    precision: Literal["auto", "fp32", "fp16", "bf16"] = _opt(
        "auto", "auto = on CUDA when fp16 is set: bf16 autocast where the GPU supports it, else fp16 + GradScaler; "
                "fp32 otherwise; bf16 works on CPU and CUDA")
    device: str | None = _opt(None, "torch device (default: cuda:LOCAL_RANK when available, else cpu)")
    num_gpus_equivalent: int | None = _opt(
        None, "match the effective batch of the recipe on G GPUs: each of the K processes accumulates "
              "train_batch_size*G/K micro-steps (default: the GPU count in the config file's name, e.g. -8gpu-, "
              "else G = K)", metavar="G")
    save_steps: int | None = _opt(None, "checkpoint every N steps (default: valid_steps; 0: only at the end and "
                                        "on a stop)")
    keep_checkpoints: int = _opt(3, "training checkpoints kept (0: all)", metavar="N")
    resume: str | None = _opt(None, "continue from the newest checkpoint of the output dir (auto; a fresh start "
                                    "when there is none), a checkpoint file or a directory",
                              nargs="?", const="auto", metavar="auto|PATH")
    overwrite: bool = _opt(False, "start over in an output dir with checkpoints")
    stop_after: int | None = _opt(None, "save a checkpoint and exit after N steps of this invocation", metavar="N")
    deterministic: bool = _opt(False, "torch.use_deterministic_algorithms(True): bit-identical resumes on the CPU")
    image_cache: int = _opt(1024, "decoded images cached per process", metavar="N")
    threads: int | None = _opt(None, "torch CPU threads per process")
    log_steps: int = _opt(1, "check and log the step statistics every N steps (one host synchronisation each); "
                             "a non-finite loss or a stop signal is acted on at these boundaries", metavar="N")
    final_eval: bool = _opt(True, "evaluate val/test at the end")
    progress: bool = _opt(True, "progress output: a bar on a terminal, a plain line every 10 s in a file or pipe")
    tensorboard: bool = _opt(True, "TensorBoard event files")
    plots: bool = _opt(False, "draw the training curves (margin loss, IAIS term, lambda_t, validation RSUM) from "
                              "the JSONL logs into results/training_curves.png at the end")
    quiet: bool = _opt(False, "results only: no progress, no settings or validation lines (the final tables print)")
    run_name: str = _opt("", "a label printed with the results")
    dry_run: int | None = _opt(None, "check paths, databases, configs and weights, print what the run would do "
                                     "and exit without training or writing; K: plan for K processes (default: "
                                     "WORLD_SIZE, else 1)", nargs="?", const=0, metavar="K")

    def __post_init__(self) -> None:
        check_types(self)
        check_ranges(self, _TRAIN_RANGES)
        if len(self.betas) != 2:
            raise OptionError("betas", f"must be a list of 2 numbers, got {self.betas!r}")


#: the range of every numeric field of :class:`TrainOptions` (None values are "not set" and skip the check)
_TRAIN_RANGES = {
    **dict.fromkeys(("num_train_steps", "train_batch_size", "negative_size", "hard_neg_size", "inf_minibatch_size",
                     "log_steps", "num_gpus_equivalent", "stop_after", "threads"), ">= 1"),
    **dict.fromkeys(("warmup_steps", "valid_steps", "save_steps", "keep_checkpoints", "n_workers", "image_cache",
                     "margin", "weight_decay", "iais_weight", "dry_run"), ">= 0"),
    "learning_rate": "> 0", "iais_gamma": "> 0", "dropout": "in [0, 1)", "betas": "in [0, 1)",
    "seed": f"in [0, {2 ** 32})",
}


# ----------------------------------------------------------------- types


class OptionError(ValueError):
    """A setting whose value has the wrong type or lies outside its range.

    ``keys`` names the field(s) at fault and ``requirement`` says what was
    expected (``"must be > 0, got nan"``). The message names the keys as a
    config file has them (``key 'learning_rate' must be > 0, got nan``);
    :func:`parse_options` names the flag instead when the value came from the
    command line (:meth:`naming`).
    """

    def __init__(self, keys: str | Sequence[str], requirement: str) -> None:
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.requirement = requirement
        super().__init__(self.naming([f"key {k!r}" for k in self.keys]))

    def naming(self, names: Sequence[str]) -> str:
        """The message with the keys called ``names`` (one per key)."""
        return f"{' and '.join(names)} {self.requirement}"


def _kind(tp: Any) -> tuple[str, Any]:
    """``(description, check)`` of a field type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        inner = [a for a in args if a is not type(None)]
        text, check = _kind(inner[0])
        return f"{text} or null", lambda v: v is None or check(v)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args), lambda v: v in args
    if origin is list:
        text, check = _kind(args[0])
        return f"a list of {text.split(' ', 1)[1]}s", lambda v: isinstance(v, list) and all(check(x) for x in v)
    checks = {int: ("an int", lambda v: isinstance(v, int) and not isinstance(v, bool)),
              float: ("a finite number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v)),
              str: ("a string", lambda v: isinstance(v, str)),
              bool: ("a bool", lambda v: isinstance(v, bool))}
    return checks[tp]


def check_types(obj: Any) -> None:
    """:class:`OptionError` naming the key when a field of the dataclass ``obj`` has a value of the wrong type
    (a float field takes finite numbers only)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        text, check = _kind(hints[f.name])
        if not check(value):
            shown = "null" if value is None else type(value).__name__
            raise OptionError(f.name, f"must be {text}, got {shown} {value!r}")


_RANGE = re.compile(r"^(?:(?P<op>>=|>) (?P<x>\S+)|in (?P<lo>[\[(])(?P<a>\S+), (?P<b>\S+)(?P<hi>[\])]))"
                    r"(?: or (?P<also>\S+))?$")
_COMPARE = {">=": operator.ge, ">": operator.gt, "[": operator.ge, "(": operator.gt, "]": operator.le,
            ")": operator.lt}


def in_range(value: float, spec: str) -> bool:
    """Whether ``value`` lies in the range ``spec``: ``">= 1"``, ``"> 0"``, ``"in [0, 1)"``, each optionally
    followed by ``" or V"`` (one more value allowed, e.g. ``-1`` for "no limit").

    >>> in_range(0.5, "in [0, 1)"), in_range(1, "in [0, 1)"), in_range(-1, ">= 1 or -1")
    (True, False, True)
    """
    m = _RANGE.match(spec)
    if m is None:
        raise ValueError(f"not a range: {spec!r}")
    if m["also"] is not None and value == float(m["also"]):
        return True
    if m["op"]:
        return _COMPARE[m["op"]](value, float(m["x"]))
    return _COMPARE[m["lo"]](value, float(m["a"])) and _COMPARE[m["hi"]](value, float(m["b"]))


def check_ranges(obj: Any, ranges: Mapping[str, str]) -> None:
    """:class:`OptionError` naming the key when a field of ``obj`` lies outside its range (:func:`in_range`).

    ``ranges`` maps field names to range specs; a None value is "not set" and
    passes; every element of a list must lie in the range.
    """
    for key, spec in ranges.items():
        value = getattr(obj, key)
        if value is not None and not all(in_range(v, spec) for v in (value if isinstance(value, list) else [value])):
            raise OptionError(key, f"must be {spec}, got {value!r}")


# ----------------------------------------------------------------- config files


def read_json_object(path: str | os.PathLike, what: str = "config file") -> dict:
    """A JSON file holding an object; errors name the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        shown = "null" if data is None else type(data).__name__
        raise ValueError(f"{path}: expected a JSON object at the top level, got {shown}")
    return data


_GPUS_IN_NAME = re.compile(r"-(\d+)gpus?(?=[-_.]|$)")


def gpus_named_by(path: str | os.PathLike) -> int | None:
    """The GPU count a config file's name gives its recipe, or None.

    >>> gpus_named_by("config/train-itm-flickr-base-8gpu-hn.json"), gpus_named_by("train-itm-coco-large-16gpu-hn.json")
    (8, 16)
    >>> gpus_named_by("my-run.json") is None
    True
    """
    match = _GPUS_IN_NAME.search(os.path.basename(os.fspath(path)))
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _split_keys(data: Mapping[str, Any], classes: Sequence[type], source: str,
                aliases: Mapping[str, Any]) -> list[dict]:
    """The values of ``data`` per dataclass; unknown keys warn."""
    data = dict(data)
    for key, convert in aliases.items():
        if key in data:
            name, value = convert(data.pop(key))
            data.setdefault(name, value)
    parts, known = [], set()
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        parts.append({k: v for k, v in data.items() if k in names})
        known |= names
    unknown = sorted(set(data) - known)
    if unknown:
        warnings.warn(f"{source}: unknown key(s) {unknown} ignored", UserWarning, stacklevel=3)
    return parts


def load_config(data: Mapping[str, Any] | str | os.PathLike, *classes: type, source: str | None = None,
                aliases: Mapping[str, Any] | None = None) -> list[Any]:
    """One instance of each dataclass in ``classes`` from a config (a JSON file or a mapping).

    Each key goes to the field of the same name; fields the config lacks keep
    their defaults; an unknown key warns. When ``source`` (the file) names a
    GPU count (:func:`gpus_named_by`) and the config has no
    ``num_gpus_equivalent``, :class:`TrainOptions` gets that count. ``aliases`` maps a foreign key to
    ``value -> (field name, value)``. A wrong type or value raises
    ``ValueError`` naming the source and the key.

    >>> opts, = load_config({"train_batch_size": 4}, TrainOptions)
    >>> opts.train_batch_size, opts.negative_size
    (4, 399)
    """
    if isinstance(data, (str, os.PathLike)):
        source = source or os.fspath(data)
        data = read_json_object(data)
    source = source or "<config>"
    named = gpus_named_by(source)
    if TrainOptions in classes and named is not None and "num_gpus_equivalent" not in data:
        data = {**data, "num_gpus_equivalent": named}
    out = []
    for cls, values in zip(classes, _split_keys(data, classes, source, aliases or {})):
        try:
            out.append(cls(**values))
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    return out


# ----------------------------------------------------------------- command lines


class _CommandLine:
    """What every command's parser does: usage errors as one line ``error: ...`` (exit status 2), and
    ``--debug``, remembered as :attr:`debug` once the command line is parsed."""

    debug = False

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        self.debug = bool(getattr(parsed, "debug", False))
        return parsed, extras

    def add_debug_flag(self, group: Any = None) -> None:
        (group or self).add_argument(
            "--debug", action="store_true",
            help="print the traceback of any error, also of those reported in one line (a bad flag or file)")


class CommandParser(_CommandLine, argparse.ArgumentParser):
    """An ``argparse`` parser with one-line usage errors and ``--debug`` (see :func:`options_parser`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_debug_flag()


def options_parser(*classes: type, prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with one flag per field of ``classes`` plus ``--config``, ``--set`` and ``--debug``.

    Usage errors are one line ``error: ...`` with exit status 2.
    """
    from transformers import HfArgumentParser

    parser = type("OptionsParser", (_CommandLine, HfArgumentParser), {})(list(classes), prog=prog,
                                                                          description=description)
    group = parser.add_argument_group("config file")
    group.add_argument("--config", help="an original training config JSON; flags override its keys")
    group.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                       help="override any config key with a JSON value, e.g. --set fp16=false (repeatable)")
    parser.add_debug_flag(group)
    return parser


def _parse_set(items: Sequence[str], parser: argparse.ArgumentParser) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=JSON, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string, e.g. --set optim=adam
    return out


def parse_options(parser: argparse.ArgumentParser, argv: Sequence[str], *classes: type,
                  aliases: Mapping[str, Any] | None = None) -> list[Any]:
    """Parse ``argv`` into one instance per dataclass: defaults < ``--config`` < ``--set`` < flags.

    Every problem is a usage error (``parser.error``: one line, exit status
    2) naming where the bad value came from: the config file and its key,
    ``--set KEY``, or the flag (``--learning-rate``), never a config key for a
    flag's value.
    """
    first = parser.parse_args(argv)
    layered = _config_and_set(parser, first.config, first.set, classes, aliases or {})
    for obj in layered.defaults:
        parser.set_defaults(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init})
    args = vars(parser.parse_args(argv))
    try:
        return [cls(**{f.name: args[f.name] for f in dataclasses.fields(cls) if f.init}) for cls in classes]
    except OptionError as err:
        given = {f.name: getattr(obj, f.name) for obj in layered.defaults for f in dataclasses.fields(obj) if f.init}
        parser.error(err.naming([f"--{k.replace('_', '-')}" if args.get(k) != given.get(k) else layered.origin(k)
                                 for k in err.keys]))
    except ValueError as err:
        parser.error(str(err))


class _Layered(NamedTuple):
    """The values of ``--config`` and ``--set``, and where each came from."""

    defaults: list
    config: str | None
    from_config: Mapping[str, Any]
    from_set: Mapping[str, Any]

    def origin(self, key: str) -> str:
        """How a message names a key whose value did not come from a flag."""
        if key in self.from_set:
            return f"--set {key}"
        return f"key {key!r} of {self.config}" if key in self.from_config else f"key {key!r} (default)"


def _config_and_set(parser: argparse.ArgumentParser, config: str | None, items: Sequence[str],
                    classes: Sequence[type], aliases: Mapping[str, Any]) -> _Layered:
    """The dataclasses from the config file, then with ``--set`` applied; each stage's errors name it."""
    data: dict = {}
    if config:
        try:
            data = read_json_object(config)
        except (OSError, ValueError) as err:
            parser.error(str(err))
    settings = _parse_set(items, parser)
    known = {f.name for cls in classes for f in dataclasses.fields(cls) if f.init} | set(aliases)
    for key in settings:
        if key not in known:
            parser.error(f"--set {key}: no such key (the keys are the flags' names, with underscores)")
    try:
        from_file = load_config(data, *classes, source=config or "<config>", aliases=aliases)
    except ValueError as err:
        parser.error(str(err))
    try:
        parts = _split_keys(settings, classes, "--set", aliases)
        defaults = [dataclasses.replace(obj, **part) for obj, part in zip(from_file, parts)]
    except ValueError as err:
        parser.error(f"--set: {err}")
    return _Layered(defaults, config, data, settings)
