"""The hard-negative fine-tuning loop, with IAIS, AMP, DDP and resumable checkpoints.

One **optimizer step** (``step`` below, the original's ``global_step``) is
``A`` micro-steps on every process; a micro-step trains one from-image group
and then one from-text group (the original's order)::

    for each direction:
        candidates = sampler.next(direction)          # positive + negative_size random negatives
        rows = mine_hard_negatives(model, candidates)  # eval mode, no grad, chunks of inf_minibatch_size
        out = model(group, scores_rows=[0])            # positive = row 0; last-layer scores of row 0
        rank = mean(clamp(margin + sigmoid(neg) - sigmoid(pos), 0))
        iais = iaisreg.torch.iais(out.scores, text_mask, image_mask, anchor=V (image) / L (text))
        loss = rank / A + (K / G) * weight * lambda_t * iais   -> backward

then unscale, clip to ``grad_norm``, AdamW step, LR schedule step.

``A = train_batch_size * G / K`` with ``K`` processes standing in for ``G``
GPUs of the original recipe (``G = K`` by default). DDP averages gradients
over the ``K`` processes, Horovod averaged them over the original's ``G``
GPUs, hence the factor ``K / G`` (1 by default) on the IAIS term; the
ranking term is divided by the accumulation count as in the original, and
the IAIS term is not (as in the authors' code).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import iaisreg
import iaisreg.torch as iais_torch

from .. import _dist
from ..config import TrainConfig, UniterModelConfig
from ..data import ImgDb, TxtDb, item_masks
from ..evaluate import evaluate_retrieval
from ..model import UniterForRetrieval, load_checkpoint
from . import checkpoint as ckpt
from .mining import Group, make_group, mine_hard_negatives
from .optim import build_optimizer, build_scheduler
from .sampling import DIRECTIONS, CandidateStream, DataStore, HardNegativeSampler

__all__ = ["TrainOptions", "TrainResult", "NonFiniteLossError", "SetupError", "train", "IAIS_MODES", "ANCHOR_POLICY",
           "rank_loss", "iais_term", "batch_arithmetic", "format_metrics_table"]

logger = logging.getLogger("integrations.uniter.finetune")

IAIS_MODES = ("none", "singular", "distributed")
#: the authors' anchor per sampling direction
ANCHOR_POLICY = {"image": "V", "text": "L"}
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


class NonFiniteLossError(RuntimeError):
    """A loss component became NaN or infinite; the run stopped without saving."""


class SetupError(ValueError):
    """The settings cannot work together (e.g. fp16 on a CPU, an uneven batch split)."""


@dataclass
class TrainOptions:
    """Everything a run needs besides the original training config.

    Attributes:
        config: the original training config (plus CLI overrides).
        model_config: transformer sizes.
        output_dir: where ``ckpt/``, ``log/`` and ``results/`` go.
        iais: ``"none"``, ``"singular"`` or ``"distributed"``.
        iais_variant: ``"official"`` or ``"paper"`` (see ``docs/semantics.md``).
        iais_anchor: ``"policy"`` (V on from-image groups, L on from-text
            groups, as the authors), ``"V"``, ``"L"`` or ``"both"``.
        iais_schedule, iais_gamma: ``lambda_t`` (``exp``/``linear``/``log``/``constant``).
        iais_weight: a constant factor on top of ``lambda_t`` (1.0 = the authors).
        precision: ``auto`` (fp16 on CUDA when the config says ``fp16``, else
            fp32), ``fp32``, ``fp16`` (CUDA only) or ``bf16``.
        device: torch device (default ``cuda:LOCAL_RANK`` when available, else CPU).
        num_gpus_equivalent: ``G``, the GPU count of the recipe to match
            (default: the number of processes).
        save_steps: checkpoint every this many steps (0: only at the end / on a stop).
        keep_checkpoints: training checkpoints kept (0: all).
        resume: None, ``"auto"`` (newest checkpoint in ``output_dir/ckpt``,
            or a fresh start) or a checkpoint path / directory.
        overwrite: start over even if ``output_dir`` holds checkpoints.
        stop_after: stop (with a checkpoint) after this many steps of this invocation.
        deterministic: ``torch.use_deterministic_algorithms(True)``.
        n_workers: data-preparation worker processes (default: the config's ``n_workers``).
        image_cache: decoded images kept per process.
        final_eval: evaluate val/test at the end.
        progress, tensorboard: user-facing output (rank 0).
        quiet: no summary table and fewer log lines.
        threads: ``torch.set_num_threads`` (None: leave as is).
        run_name: a label printed with the results.
    """

    config: TrainConfig
    model_config: UniterModelConfig
    output_dir: str
    iais: str = "none"
    iais_variant: str = "official"
    iais_anchor: str = "policy"
    iais_schedule: str = "exp"
    iais_gamma: float = 5.0
    iais_weight: float = 1.0
    precision: str = "auto"
    device: str | None = None
    num_gpus_equivalent: int | None = None
    save_steps: int | None = None
    keep_checkpoints: int = 3
    resume: str | None = None
    overwrite: bool = False
    stop_after: int | None = None
    deterministic: bool = False
    n_workers: int | None = None
    image_cache: int = 1024
    final_eval: bool = True
    progress: bool = True
    tensorboard: bool = True
    quiet: bool = False
    threads: int | None = None
    img_dim: int | None = None
    run_name: str = ""

    def __post_init__(self) -> None:
        if self.iais not in IAIS_MODES:
            raise ValueError(f"iais must be one of {IAIS_MODES}, got {self.iais!r}")
        if self.iais_variant not in iaisreg.OPTIONS["variant"].choices:
            raise ValueError(f"iais_variant must be one of {iaisreg.OPTIONS['variant'].choices}, "
                             f"got {self.iais_variant!r}")
        if self.iais_anchor not in ("policy",) + iaisreg.OPTIONS["anchor"].choices:
            raise ValueError(f"iais_anchor must be 'policy', 'V', 'L' or 'both', got {self.iais_anchor!r}")
        if self.iais_schedule not in iaisreg.SCHEDULES:
            raise ValueError(f"iais_schedule must be one of {iaisreg.SCHEDULES}, got {self.iais_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not math.isfinite(self.iais_weight) or self.iais_weight < 0:
            raise ValueError(f"iais_weight must be finite and >= 0, got {self.iais_weight}")
        if self.num_gpus_equivalent is not None and self.num_gpus_equivalent < 1:
            raise ValueError(f"num_gpus_equivalent must be >= 1, got {self.num_gpus_equivalent}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be >= 1, got {self.stop_after}")
        if self.config.num_train_steps < 1:
            raise ValueError(f"num_train_steps must be >= 1, got {self.config.num_train_steps}")
        if self.config.hard_neg_size < 1 or self.config.negative_size < 1:
            raise ValueError(f"negative_size and hard_neg_size must be >= 1, got {self.config.negative_size} "
                             f"and {self.config.hard_neg_size}")


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank).

    Attributes:
        step: optimizer steps done (in total, over all invocations).
        finished: True when ``num_train_steps`` was reached.
        stop_reason: ``"done"``, ``"signal"`` (SIGTERM/SIGINT) or ``"stop_after"``.
        checkpoint: the last training checkpoint written (rank 0; None elsewhere).
        model_path: the final plain model state dict (rank 0, when finished).
        val_metrics, test_metrics: final full-ranking metrics (None when not run).
        history: per-step log records of this invocation (rank 0).
        seconds: wall time of this invocation.
    """

    step: int
    finished: bool
    stop_reason: str
    checkpoint: str | None = None
    model_path: str | None = None
    val_metrics: dict | None = None
    test_metrics: dict | None = None
    history: list = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------- losses


def rank_loss(logits: torch.Tensor, margin: float) -> torch.Tensor:
    """``mean(clamp(margin + s_neg - s_pos, 0))`` on sigmoid scores; row 0 is the positive."""
    scores = torch.sigmoid(logits.float())
    return torch.clamp(margin + scores[1:] - scores[0], min=0).mean()


def iais_term(scores: torch.Tensor, batch: dict, *, mode: str, anchor: str, variant: str) -> torch.Tensor:
    """IAIS of the positive pair (row 0) from its last-layer scores ``(1, H, N, N)``."""
    text_mask, image_mask = item_masks(batch["txt_lens"][:1], batch["num_bbs"][:1], scores.shape[-1])
    return iais_torch.iais(scores, text_mask=text_mask, image_mask=image_mask, mode=mode, anchor=anchor,
                           variant=variant)


def batch_arithmetic(train_batch_size: int, gpus: int, world: int) -> tuple[int, float]:
    """``(A, c)``: micro-steps per process per update and the factor on the IAIS term.

    The original recipe on ``G`` GPUs accumulates ``train_batch_size``
    micro-steps per GPU and averages the gradients over the GPUs (Horovod),
    each micro-step adding ``rank / train_batch_size + lambda_t * iais``. With
    ``K`` processes, each accumulates ``A = train_batch_size * G / K``
    micro-steps and DDP averages over ``K``; the same gradient results when a
    micro-step adds ``rank / A + (K / G) * lambda_t * iais``.

    >>> batch_arithmetic(8, 8, 2)
    (32, 0.25)
    >>> batch_arithmetic(8, 1, 1)
    (8, 1.0)
    """
    total = train_batch_size * gpus
    if total % world:
        raise SetupError(f"train_batch_size ({train_batch_size}) x num_gpus_equivalent ({gpus}) = {total} "
                         f"micro-steps per update cannot be split evenly over {world} processes")
    return total // world, world / gpus


# --------------------------------------------------------------------- helpers


class _StopRequest:
    """SIGTERM/SIGINT -> stop at the next step boundary; a second signal acts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: give up on the clean stop
            self.restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"\n[rank {_dist.rank()}] received {signal.Signals(signum).name}: saving a checkpoint at the end "
              f"of this step (send it again to stop at once)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, TypeError):
                pass
        self._previous.clear()


def _stream_seeds(seed: int, rank: int, salt: int = 0) -> None:
    """Seed this rank's Python, NumPy and torch streams (distinct per rank)."""
    s = np.random.SeedSequence([seed, rank, salt]).generate_state(3)
    random.seed(int(s[0]))
    np.random.seed(int(s[1]))
    torch.manual_seed(int(s[2]))


def _resolve_precision(precision: str, cfg: TrainConfig, device: torch.device) -> str:
    if precision == "auto":
        return "fp16" if device.type == "cuda" and cfg.fp16 else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise SetupError("precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    return precision


def _autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager] | None:
    if precision == "fp16":
        return lambda: torch.autocast(device.type, dtype=torch.float16)
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return None


def _open_split(cfg: TrainConfig, txt_path: str | None, img_path: str | None):
    if not txt_path or not img_path:
        return None
    return (TxtDb(txt_path, max_txt_len=-1),
            ImgDb(img_path, conf_th=cfg.conf_th, max_bb=cfg.max_bb, min_bb=cfg.min_bb,
                  compressed=cfg.compressed_db))


def _close_databases(databases: list) -> None:
    """Close the readers now rather than in a garbage collection.

    A reader finalised by the cyclic garbage collector (e.g. one held by a
    traceback) can run while the same thread holds the LMDB registry lock of
    ``data._lmdb`` (``_acquire``), which is not re-entrant: a deadlock. An
    explicitly closed reader's finaliser does nothing.
    """
    for db in databases:
        try:
            db.close()
        except Exception:  # never mask the run's own error
            pass


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if _dist.world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


class _Logs:
    """Rank 0's outputs: JSONL step log, TensorBoard scalars."""

    def __init__(self, output_dir: str, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = os.path.join(output_dir, "log", "train_log.jsonl")
        self.writer = None
        self._handle = None
        if not enabled:
            return
        if tensorboard:
            try:
                if "tensorflow" not in sys.modules:
                    # TensorBoard imports TensorFlow when installed (seconds, and noisy) unless its own
                    # "no TensorFlow" marker module exists; the event writer works without it.
                    import types

                    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(os.path.join(output_dir, "log"))
            except Exception as err:  # tensorboard not installed
                logger.warning("TensorBoard disabled (%s: %s)", type(err).__name__, err)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps > ``step`` (left by a run that stopped after its last checkpoint)."""
        if not self.enabled:
            return
        kept = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        if json.loads(line)["step"] <= step:
                            kept.append(line if line.endswith("\n") else line + "\n")
                    except (ValueError, KeyError):
                        continue
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(kept)
        os.replace(tmp, self.path)

    def record(self, record: dict) -> None:
        if not self.enabled:
            return
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def format_metrics_table(metrics: dict, title: str) -> str:
    """A short table of R@1/5/10 both ways and RSUM (percent)."""
    lines = [title,
             f"  {'':16s}{'R@1':>8s}{'R@5':>8s}{'R@10':>8s}",
             f"  {'text -> image':16s}" + "".join(f"{100 * metrics[f'img_r{k}']:8.2f}" for k in (1, 5, 10)),
             f"  {'image -> text':16s}" + "".join(f"{100 * metrics[f'txt_r{k}']:8.2f}" for k in (1, 5, 10)),
             f"  {'RSUM':16s}{metrics['rsum']:8.2f}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------ train


def train(opts: TrainOptions) -> TrainResult:
    """Run (or continue) one fine-tuning run; see the module docstring.

    Call it on every process of a ``torchrun`` job (or once without one).

    Raises:
        NonFiniteLossError: a loss component became NaN/inf (nothing is saved).
        FileExistsError: ``output_dir`` holds checkpoints and neither
            ``resume`` nor ``overwrite`` was given.
    """
    started = time.perf_counter()
    cfg = opts.config
    if opts.deterministic and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    ctx = _dist.init_from_env(opts.device)
    rank, world = ctx.rank, ctx.world_size
    is_main = rank == 0
    device = ctx.device
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    threads_before = torch.get_num_threads()
    stop = _StopRequest()
    logs = _Logs(opts.output_dir, is_main, opts.tensorboard)
    model = ddp = optimizer = scheduler = scaler = stream_iter = None
    databases: list = []  # closed explicitly at the end (see _close_databases)
    clean_exit = False
    try:
        if opts.threads:
            torch.set_num_threads(opts.threads)
        if opts.deterministic:
            torch.use_deterministic_algorithms(True)
        ckpt_dir = os.path.join(opts.output_dir, "ckpt")

        # ---------------------------------------------------------- resume?
        resume_path = None
        if opts.resume:
            if opts.resume == "auto":
                resume_path = ckpt.latest_checkpoint(ckpt_dir)
            elif os.path.isdir(opts.resume):
                resume_path = ckpt.latest_checkpoint(opts.resume)
                if resume_path is None:
                    raise ckpt.CheckpointError(f"no training checkpoint (train_step_*.pt) in {opts.resume}")
            else:
                resume_path = opts.resume
        existing = ckpt.find_checkpoints(ckpt_dir)
        if existing and resume_path is None and not opts.overwrite:
            raise FileExistsError(
                f"{opts.output_dir} holds training checkpoints from an earlier run (newest: "
                f"{existing[-1][1]}); pass --resume auto to continue it or --overwrite to start over")
        if is_main:
            os.makedirs(ckpt_dir, exist_ok=True)
            os.makedirs(os.path.join(opts.output_dir, "log"), exist_ok=True)
            ckpt.remove_temp_files(ckpt_dir)
            if opts.overwrite and resume_path is None:
                for _, path in existing:
                    os.unlink(path)
        if world > 1:
            dist.barrier()
        state = ckpt.load_training_checkpoint(resume_path) if resume_path else None

        # ---------------------------------------------------------- data
        if not cfg.train_txt_dbs:
            raise SetupError("no training data: give train_txt_dbs/train_img_dbs in the config or "
                             "--txt-db/--img-db")
        sources = [(TxtDb(t, max_txt_len=cfg.max_txt_len),
                    ImgDb(i, conf_th=cfg.conf_th, max_bb=cfg.max_bb, min_bb=cfg.min_bb, compressed=cfg.compressed_db))
                   for t, i in zip(cfg.train_txt_dbs, cfg.train_img_dbs)]
        databases += [db for pair in sources for db in pair]
        store = DataStore(sources, image_cache=opts.image_cache)
        mcfg = dataclasses.replace(opts.model_config, hidden_dropout_prob=cfg.dropout,
                                   attention_probs_dropout_prob=cfg.dropout)
        store.vocab_size, store.max_positions = mcfg.vocab_size, mcfg.max_position_embeddings
        img_dim = opts.img_dim or store.img_dim()
        val = _open_split(cfg, cfg.val_txt_db, cfg.val_img_db)
        test = _open_split(cfg, cfg.test_txt_db, cfg.test_img_db)
        databases += [db for pair in (val, test) if pair is not None for db in pair]

        # ---------------------------------------------------------- model
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        model = UniterForRetrieval(mcfg, img_dim=img_dim)
        if cfg.checkpoint and state is None:
            report = load_checkpoint(model, cfg.checkpoint)
            if is_main:
                logger.info("loaded %s%s", cfg.checkpoint,
                            " (rank_output initialised from itm_output)" if report.rank_output_from_itm else "")
        elif not cfg.checkpoint and state is None and is_main:
            logger.warning("no pre-trained checkpoint given: training UNITER from random initialisation")
        model.to(device)

        precision = _resolve_precision(opts.precision, cfg, device)
        autocast = _autocast_factory(precision, device)
        optimizer = build_optimizer(model, optim=cfg.optim, learning_rate=cfg.learning_rate, betas=cfg.betas,
                                    weight_decay=cfg.weight_decay)
        scheduler = build_scheduler(optimizer, warmup_steps=cfg.warmup_steps, total_steps=cfg.num_train_steps,
                                    learning_rate=cfg.learning_rate)
        scaler = torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu",
                                      enabled=precision == "fp16")

        # ---------------------------------------------------------- batch arithmetic
        gpus = opts.num_gpus_equivalent or world
        accum, iais_scale = batch_arithmetic(cfg.train_batch_size, gpus, world)

        sampler_kwargs = dict(negative_size=cfg.negative_size, seed=cfg.seed, rank=rank, world_size=world)
        try:
            sampler = HardNegativeSampler(store, **sampler_kwargs)
        except ValueError as err:  # e.g. more processes than images
            raise SetupError(str(err)) from None

        step = 0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            step = int(state["step"])
            if state.get("world_size") == world and rank < len(state["rank_states"]):
                mine = state["rank_states"][rank]
                sampler.load_state_dict(mine["sampler"])
                ckpt.set_rng_state(mine["rng"])
            else:
                logger.warning("checkpoint was written by %s process(es), this run has %d: model and optimizer "
                               "continue, data order and random streams restart", state.get("world_size"), world)
                _stream_seeds(cfg.seed, rank, salt=step + 1)
            saved = state.get("config", {})
            changed = sorted(k for k in ("num_train_steps", "train_batch_size", "negative_size", "hard_neg_size",
                                         "learning_rate", "margin", "warmup_steps")
                             if k in saved and saved[k] != getattr(cfg, k))
            if changed and is_main:
                logger.warning("resuming with settings changed since the checkpoint: %s", changed)
            if is_main:
                logger.info("resumed from %s at step %d", resume_path, step)
        else:
            _stream_seeds(cfg.seed, rank)
        logs.truncate_after(step)

        if world > 1:
            ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        train_model = ddp if ddp is not None else model

        # ---------------------------------------------------------- IAIS
        use_iais = opts.iais != "none"
        schedule = iaisreg.get_schedule(opts.iais_schedule, cfg.num_train_steps, gamma=opts.iais_gamma)
        anchors = (ANCHOR_POLICY if opts.iais_anchor == "policy"
                   else {d: opts.iais_anchor for d in DIRECTIONS})
        row0 = torch.zeros(1, dtype=torch.long, device=device)

        # ---------------------------------------------------------- data stream
        n_workers = cfg.n_workers if opts.n_workers is None else opts.n_workers
        stream = CandidateStream(store, sampler_kwargs, sampler.state_dict())
        if n_workers > 0:
            loader = torch.utils.data.DataLoader(
                stream, batch_size=None, num_workers=n_workers, pin_memory=cfg.pin_mem and device.type == "cuda",
                prefetch_factor=4, generator=torch.Generator())  # own generator: the global RNG stays untouched
            stream_iter = iter(loader)
        else:
            stream_iter = iter(stream)

        save_steps = cfg.valid_steps if opts.save_steps is None else opts.save_steps
        if is_main:
            meta = {"config": cfg.to_dict(), "model_config": mcfg.to_dict(), "img_dim": img_dim,
                    "options": {k: v for k, v in dataclasses.asdict(opts).items()
                                if k not in ("config", "model_config")},
                    "world_size": world, "num_gpus_equivalent": gpus, "accumulation": accum,
                    "precision": precision, "device": str(device),
                    "n_train_captions": store.n_captions, "n_train_images": store.n_images}
            with open(os.path.join(opts.output_dir, "log", "hps.json"), "w", encoding="utf-8") as handle:
                json.dump(meta, handle, indent=2)
            if not opts.quiet:
                logger.info("%d process(es) on %s, %s; %d train captions / %d images; %d micro-steps x 2 groups "
                            "per process per update (train_batch_size %d x %d GPU-equivalents / %d processes); "
                            "IAIS %s", world, device, precision, store.n_captions, store.n_images, accum,
                            cfg.train_batch_size, gpus, world,
                            "off" if not use_iais else f"{opts.iais} ({opts.iais_variant}, anchor "
                            f"{opts.iais_anchor}, {opts.iais_schedule} schedule)")

        stop.install()
        from tqdm import tqdm

        bar = tqdm(total=cfg.num_train_steps, initial=step, unit="step", dynamic_ncols=True,
                   desc=opts.run_name or "train", disable=not (opts.progress and is_main),
                   file=sys.stderr, smoothing=0.1)
        history: list[dict] = []
        steps_this_run = 0
        train_seconds = 0.0
        groups_done = pairs_done = 0
        stop_reason = "done"
        last_ckpt = None

        def save_training_state() -> str | None:
            rank_state = {"rng": ckpt.rng_state(), "sampler": sampler.state_dict()}
            if world > 1:
                gathered: list = [None] * world
                dist.all_gather_object(gathered, rank_state)
            else:
                gathered = [rank_state]
            path = None
            if is_main:
                path = ckpt.checkpoint_path(ckpt_dir, step)
                ckpt.save_atomic({
                    "format": ckpt.FORMAT, "step": step, "world_size": world,
                    "next_direction": DIRECTIONS[0],  # a step always ends after its last from-text group
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "rank_states": gathered, "config": cfg.to_dict(), "model_config": mcfg.to_dict(),
                    "img_dim": img_dim, "iais": {"mode": opts.iais, "variant": opts.iais_variant,
                                                 "anchor": opts.iais_anchor, "schedule": opts.iais_schedule,
                                                 "gamma": opts.iais_gamma, "weight": opts.iais_weight},
                }, path)
                ckpt.prune_checkpoints(ckpt_dir, opts.keep_checkpoints)
            if world > 1:
                dist.barrier()
            return path

        def save_model_weights(tag: str) -> str | None:
            path = None
            if is_main:
                path = os.path.join(ckpt_dir, f"model_step_{tag}.pt")
                ckpt.save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
            return path

        def validate() -> dict | None:
            if val is None or not cfg.full_val:
                return None
            metrics = evaluate_retrieval(model, val[0], val[1], batch_size=cfg.inf_minibatch_size,
                                         amp_dtype={"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision),
                                         progress=opts.progress and is_main)
            logs.scalars("valid/", metrics, step)
            if is_main:
                label = f"{opts.run_name}, step" if opts.run_name else "step"
                bar.write(f"{label} {step}: validation RSUM {metrics['rsum']:.2f} "
                          f"(IR@1 {100 * metrics['img_r1']:.2f}, TR@1 {100 * metrics['txt_r1']:.2f})")
            return metrics

        # ---------------------------------------------------------- the loop
        while step < cfg.num_train_steps:
            t0 = time.perf_counter()
            lam = float(schedule(step)) * opts.iais_weight if use_iais else 0.0
            stats = []  # per group: (rank loss, iais loss, objective) as 0-d tensors
            directions = []
            scored = trained = 0
            for micro in range(accum):
                for direction in DIRECTIONS:
                    expected = sampler.next(direction)
                    prepared = next(stream_iter)
                    if prepared.candidates != expected:
                        raise RuntimeError("data stream out of step with the sampler (a bug)")
                    rows = mine_hard_negatives(model, prepared, hard_neg_size=cfg.hard_neg_size,
                                               chunk_size=cfg.inf_minibatch_size, device=device, autocast=autocast)
                    group: Group = make_group(prepared, rows, device)
                    sync = ddp is None or (micro == accum - 1 and direction == DIRECTIONS[-1])
                    with contextlib.nullcontext() if sync else ddp.no_sync():
                        with autocast() if autocast is not None else contextlib.nullcontext():
                            out = train_model(**group.batch, scores_rows=row0 if use_iais else None)
                        r_loss = rank_loss(out.logits, cfg.margin)
                        if use_iais:
                            i_loss = iais_term(out.scores, group.batch, mode=opts.iais,
                                               anchor=anchors[direction], variant=opts.iais_variant)
                        else:
                            i_loss = torch.zeros((), device=device)
                        loss = r_loss / accum + (iais_scale * lam) * i_loss
                        scaler.scale(loss).backward()
                    stats.append(torch.stack([r_loss.detach(), i_loss.detach(), loss.detach()]))
                    directions.append((micro, direction))
                    scored += group.n_scored
                    trained += len(group.captions)

            values = torch.stack(stats).double().cpu()  # one host sync per update
            finite = torch.isfinite(values)
            bad_local = 0.0 if bool(finite.all()) else 1.0
            per_dir = {d: values[[i for i, (_, dd) in enumerate(directions) if dd == d]] for d in DIRECTIONS}
            local = [bad_local, 1.0 if stop.signum is not None else 0.0,
                     float(values[:, 2].sum()), float(values[:, 0].mean()), float(values[:, 1].mean()),
                     float(per_dir["image"][:, 1].mean()), float(per_dir["text"][:, 1].mean())]
            reduced = _all_reduce_sum(local, device)
            if reduced[0] > 0:
                if bad_local:
                    g, c = [int(x) for x in (~finite).nonzero()[0]]
                    micro, direction = directions[g]
                    component = ("rank", "iais", "total")[c]
                    message = (f"non-finite {component} loss ({values[g, c].item()}) at step {step + 1} "
                               f"(micro-step {micro + 1}/{accum}, from-{direction} group, rank {rank}); "
                               f"stopping without saving (last checkpoint: "
                               f"{ckpt.latest_checkpoint(ckpt_dir) or 'none'})")
                else:
                    message = (f"another process reported a non-finite loss at step {step + 1}; stopping "
                               f"without saving")
                raise NonFiniteLossError(message)

            scaler.unscale_(optimizer)
            params = [p for p in model.parameters() if p.grad is not None]
            max_norm = cfg.grad_norm if cfg.grad_norm > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            if not math.isfinite(grad_norm) and precision != "fp16":
                raise NonFiniteLossError(f"non-finite gradient norm ({grad_norm}) at step {step + 1} with finite "
                                         f"losses; stopping without saving")
            lr = scheduler.get_last_lr()[0]
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            steps_this_run += 1

            seconds = time.perf_counter() - t0
            train_seconds += seconds
            groups_done += len(stats) * world
            pairs_done += (scored + trained) * world
            record = {"step": step, "loss": reduced[2] / world, "rank_loss": reduced[3] / world,
                      "iais_loss": reduced[4] / world, "iais_image": reduced[5] / world,
                      "iais_text": reduced[6] / world, "lambda": lam, "lr": lr, "grad_norm": grad_norm,
                      "step_seconds": seconds, "groups_per_s": groups_done / train_seconds,
                      "pairs_per_s": pairs_done / train_seconds}
            if is_main:
                history.append(record)
                logs.record(record)
                logs.scalars("train/", {k: v for k, v in record.items() if k != "step"}, step)
                if precision == "fp16":
                    logs.scalars("train/", {"loss_scale": scaler.get_scale()}, step)
                postfix = {"loss": f"{record['loss']:.4f}", "rank": f"{record['rank_loss']:.4f}"}
                if use_iais:
                    postfix.update(iais=f"{record['iais_loss']:.4f}", lam=f"{lam:.3g}")
                postfix["groups/s"] = f"{record['groups_per_s']:.1f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)

            stop_now = reduced[1] > 0
            if cfg.valid_steps > 0 and step % cfg.valid_steps == 0 and step < cfg.num_train_steps:
                if validate() is not None:
                    save_model_weights(str(step))
                    # a signal received during the (possibly long) validation stops at this boundary
                    stop_now = _all_reduce_sum([1.0 if stop.signum is not None else 0.0], device)[0] > 0
            if stop_now:
                stop_reason = "signal"
            elif opts.stop_after is not None and steps_this_run >= opts.stop_after and step < cfg.num_train_steps:
                stop_reason, stop_now = "stop_after", True
            if stop_now or step >= cfg.num_train_steps or (save_steps > 0 and step % save_steps == 0):
                last_ckpt = save_training_state()
            if stop_now:
                break
        bar.close()

        result = TrainResult(step=step, finished=step >= cfg.num_train_steps, stop_reason=stop_reason,
                             checkpoint=last_ckpt, history=history)
        if not result.finished:
            if is_main:
                logger.info("stopped at step %d/%d (%s); checkpoint %s; continue with --resume auto", step,
                            cfg.num_train_steps, stop_reason, last_ckpt)
        else:
            if last_ckpt is None:  # already complete when started (resumed a finished run)
                last_ckpt = ckpt.latest_checkpoint(ckpt_dir)
                result.checkpoint = last_ckpt
            result.model_path = save_model_weights(f"{step}_final")
            if opts.final_eval and stop.signum is None:
                amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
                for name, split in (("val", val), ("test", test)):
                    if split is None:
                        continue
                    metrics = evaluate_retrieval(model, split[0], split[1], batch_size=cfg.inf_minibatch_size,
                                                 amp_dtype=amp_dtype, progress=opts.progress and is_main)
                    setattr(result, f"{name}_metrics", metrics)
                    logs.scalars(f"eval/{name}_", metrics, step)
                    if is_main:
                        out_path = os.path.join(opts.output_dir, "results", f"{name}_metrics.json")
                        os.makedirs(os.path.dirname(out_path), exist_ok=True)
                        with open(out_path, "w", encoding="utf-8") as handle:
                            json.dump({"split": name, "txt_db": split[0].path, "img_db": split[1].path,
                                       "step": step, "iais": opts.iais, "metrics": metrics}, handle, indent=2)
                        if not opts.quiet:
                            print(format_metrics_table(
                                metrics, f"{name} ({metrics['n_captions']} captions x {metrics['n_images']} images), "
                                         f"step {step}{', ' + opts.run_name if opts.run_name else ''}:"),
                                  flush=True)
        result.seconds = time.perf_counter() - started
        clean_exit = True
        return result
    finally:
        stop.restore()
        logs.close()
        if stream_iter is not None and hasattr(stream_iter, "_shutdown_workers"):
            stream_iter._shutdown_workers()
        del ddp, model, optimizer, scheduler, scaler, stream_iter
        _close_databases(databases)
        gc.collect()
        if clean_exit or not ctx.owns_group:
            _dist.teardown(ctx)
        elif dist.is_initialized():  # an error: no barrier (another rank may never reach it)
            dist.destroy_process_group()
        if opts.deterministic and not was_deterministic:
            torch.use_deterministic_algorithms(False)
        if opts.threads:
            torch.set_num_threads(threads_before)
