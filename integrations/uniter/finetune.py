"""Hard-negative retrieval fine-tuning of UNITER, with or without IAIS.

Command line (from a checkout)::

    python -m integrations.uniter.finetune                       # no arguments: the built-in synthetic demo

    python -m integrations.uniter.finetune --config config/train-itm-flickr-base-8gpu-hn.json \\
        --model-config config/uniter-base.json --checkpoint pretrained/uniter-base.pt \\
        --output-dir runs/flickr-iais --iais singular

    torchrun --nproc_per_node=8 -m integrations.uniter.finetune --config ... --iais singular
    torchrun --nproc_per_node=2 -m integrations.uniter.finetune --config ... --num-gpus-equivalent 8

    python -m integrations.uniter.finetune --config ... --output-dir runs/flickr-iais --resume auto

The config is an original ``train-itm-*-hn.json`` file, read unchanged; flags
override its keys. See ``docs/finetune.md`` for the recipe, the batch
arithmetic, checkpoints and outputs.

Exit status: 0 when the run finished or stopped on request (SIGTERM/SIGINT,
``--stop-after``) with a checkpoint; 1 when a loss became NaN/inf; 2 for a
usage error (bad flag, missing file, output directory already used).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

from .config import TrainConfig, UniterModelConfig
from .data import DbError
from .train.checkpoint import CheckpointError
from .train.loop import IAIS_MODES, PRECISIONS, NonFiniteLossError, SetupError, TrainOptions, TrainResult, train

__all__ = ["main", "build_parser", "options_from_args"]

#: flags that override a config key of the same meaning: flag dest -> config key
_CONFIG_FLAGS = {
    "txt_db": "train_txt_dbs", "img_db": "train_img_dbs", "val_txt_db": "val_txt_db",
    "val_img_db": "val_img_db", "test_txt_db": "test_txt_db", "test_img_db": "test_img_db",
    "checkpoint": "checkpoint", "model_config": "model_config", "output_dir": "output_dir",
    "num_train_steps": "num_train_steps", "train_batch_size": "train_batch_size",
    "negative_size": "negative_size", "hard_neg_size": "hard_neg_size",
    "inf_minibatch_size": "inf_minibatch_size", "learning_rate": "learning_rate",
    "warmup_steps": "warmup_steps", "valid_steps": "valid_steps", "seed": "seed", "margin": "margin",
    "grad_norm": "grad_norm", "max_txt_len": "max_txt_len", "dropout": "dropout",
    "weight_decay": "weight_decay", "n_workers": "n_workers",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m integrations.uniter.finetune",
        description="Hard-negative image-text retrieval fine-tuning of UNITER with the IAIS relation-alignment "
                    "regularizer (Ren et al., ACL 2021). Without any argument, runs the built-in synthetic demo. "
                    "Run under torchrun for several processes (DDP).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("config (an original train-itm-*-hn.json; flags override its keys)")
    g.add_argument("--config", help="original training config JSON")
    g.add_argument("--txt-db", nargs="+", metavar="PATH", help="training txt_db(s) (train_txt_dbs)")
    g.add_argument("--img-db", nargs="+", metavar="PATH", help="training img_db(s) (train_img_dbs)")
    for split in ("val", "test"):
        g.add_argument(f"--{split}-txt-db", metavar="PATH", help=f"{split}_txt_db")
        g.add_argument(f"--{split}-img-db", metavar="PATH", help=f"{split}_img_db")
    g.add_argument("--checkpoint", help="pre-trained (or fine-tuned) UNITER weights to start from; "
                                        "rank_output is initialised from itm_output when absent")
    g.add_argument("--model-config", help="model config JSON (uniter-base.json)")
    g.add_argument("--output-dir", help="run directory (ckpt/, log/, results/)")
    for name, kind in (("num-train-steps", int), ("train-batch-size", int), ("negative-size", int),
                       ("hard-neg-size", int), ("inf-minibatch-size", int), ("learning-rate", float),
                       ("warmup-steps", int), ("valid-steps", int), ("seed", int), ("margin", float),
                       ("grad-norm", float), ("max-txt-len", int), ("dropout", float), ("weight-decay", float),
                       ("n-workers", int)):
        g.add_argument(f"--{name}", type=kind, help=f"config key {name.replace('-', '_')}")
    g.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override any config key with a JSON value, e.g. --set fp16=false (repeatable)")

    g = p.add_argument_group("IAIS")
    g.add_argument("--iais", choices=IAIS_MODES,
                   help="relation-alignment regularizer (default: the config's 'IAIS' key, else none)")
    g.add_argument("--iais-variant", choices=("official", "paper"), default="official",
                   help="the authors' code or the printed equations (docs/semantics.md)")
    g.add_argument("--iais-anchor", choices=("policy", "V", "L", "both"), default="policy",
                   help="policy = V on from-image groups, L on from-text groups (the authors)")
    g.add_argument("--iais-schedule", choices=("exp", "linear", "log", "constant"), default="exp",
                   help="lambda_t annealing (paper Eq. 16)")
    g.add_argument("--iais-gamma", type=float, default=5.0, help="gamma of the exp/log schedules")
    g.add_argument("--iais-weight", type=float, default=1.0, help="constant factor on lambda_t")

    g = p.add_argument_group("run")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto = fp16 autocast + GradScaler on CUDA when the config says fp16, else fp32; "
                        "bf16 autocast works on CPU and CUDA")
    g.add_argument("--device", help="torch device (default: cuda:LOCAL_RANK when available, else cpu)")
    g.add_argument("--num-gpus-equivalent", type=int, metavar="G",
                   help="match the effective batch of the original recipe on G GPUs: each of the K processes "
                        "accumulates train_batch_size*G/K micro-steps (default G = K)")
    g.add_argument("--save-steps", type=int, help="checkpoint every N steps (default: valid_steps; 0: only at "
                                                  "the end and on a stop)")
    g.add_argument("--keep-checkpoints", type=int, default=3, metavar="N",
                   help="training checkpoints kept (0: all)")
    g.add_argument("--resume", nargs="?", const="auto", metavar="auto|PATH",
                   help="continue from the newest checkpoint of the output dir (auto; a fresh start when there "
                        "is none), a checkpoint file or a directory")
    g.add_argument("--overwrite", action="store_true", help="start over in an output dir with checkpoints")
    g.add_argument("--stop-after", type=int, metavar="N",
                   help="save a checkpoint and exit after N steps of this invocation (time-sliced jobs)")
    g.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True): bit-identical resumes on the CPU")
    g.add_argument("--image-cache", type=int, default=1024, metavar="N", help="decoded images cached per process")
    g.add_argument("--img-dim", type=int, help="region feature width (default: read from the img_db)")
    g.add_argument("--threads", type=int, help="torch CPU threads per process")
    g.add_argument("--no-final-eval", action="store_true", help="skip the final val/test evaluation")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files")
    g.add_argument("--quiet", action="store_true", help="less output")
    return p


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


def options_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TrainOptions:
    """Merge the config file, ``--set`` and the flags into :class:`TrainOptions`."""
    data: dict = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as handle:
                data = json.load(handle)
        except OSError as err:
            parser.error(f"cannot read the config {args.config}: {err}")
        except json.JSONDecodeError as err:
            parser.error(f"{args.config}: not valid JSON ({err})")
        if not isinstance(data, dict):
            parser.error(f"{args.config}: expected a JSON object")
    data.update(_parse_set(args.set, parser))
    for dest, key in _CONFIG_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            data[key] = value
    if args.txt_db is not None and args.img_db is None and len(data.get("train_img_dbs", [])) != len(args.txt_db):
        parser.error("--txt-db needs a matching --img-db")
    extra_iais = data.get("IAIS")  # the authors' fork: "singular", "distributed" or false
    cfg = TrainConfig.from_dict({k: v for k, v in data.items() if k != "IAIS"},
                                source=args.config or "<command line>")
    iais = args.iais
    if iais is None:
        iais = extra_iais if extra_iais in ("singular", "distributed") else "none"
    if not cfg.model_config:
        parser.error("no model config: pass --model-config (or set model_config in the config)")
    if not os.path.isfile(cfg.model_config):
        parser.error(f"model config not found: {cfg.model_config}")
    if not cfg.output_dir:
        parser.error("no output directory: pass --output-dir (or set output_dir in the config)")
    if not cfg.train_txt_dbs:
        parser.error("no training data: pass --txt-db/--img-db (or train_txt_dbs/train_img_dbs in the config)")
    return TrainOptions(
        config=cfg, model_config=UniterModelConfig.from_json(cfg.model_config), output_dir=cfg.output_dir,
        iais=iais, iais_variant=args.iais_variant, iais_anchor=args.iais_anchor,
        iais_schedule=args.iais_schedule, iais_gamma=args.iais_gamma, iais_weight=args.iais_weight,
        precision=args.precision, device=args.device, num_gpus_equivalent=args.num_gpus_equivalent,
        save_steps=args.save_steps, keep_checkpoints=args.keep_checkpoints, resume=args.resume,
        overwrite=args.overwrite, stop_after=args.stop_after, deterministic=args.deterministic,
        image_cache=args.image_cache, img_dim=args.img_dim, threads=args.threads,
        final_eval=not args.no_final_eval, progress=not args.no_progress, tensorboard=not args.no_tensorboard,
        quiet=args.quiet)


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", stream=sys.stderr)


def run(argv: Sequence[str]) -> tuple[int, TrainResult | None]:
    """Parse ``argv`` and train; returns ``(exit status, result or None)``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        opts = options_from_args(args, parser)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    _setup_logging()
    try:
        result = train(opts)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1, None
    except (SetupError, FileExistsError, CheckpointError, DbError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2, None
    return 0, result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; with no argument at all, the built-in demo."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        from .demo import main as demo_main

        return demo_main([])
    return run(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
