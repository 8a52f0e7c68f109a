"""The hard-negative fine-tuning loop, for any model plug-in.

One **optimizer step** (``step``, the original's ``global_step``) is ``A``
micro-steps on every process; a micro-step trains one from-image group and then
one from-text group (the original's order)::

    for each direction:
        candidates = sampler.next(direction)                 # positive + negative_size random negatives
        rows = mine_hard_negatives(model, candidates)         # eval mode, no grad, chunks of inf_minibatch_size
        out = model(**group, scores_rows=[0])                 # positive = row 0, with its last-layer scores
        loss = objective(out, direction, lambda_t)            # rank / A + (K / G) * weight * lambda_t * iais
        loss.backward()

then unscale, clip to ``grad_norm``, optimizer step, LR schedule step; see
:mod:`.objective` for the loss and the batch arithmetic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

import iaisreg

from . import checkpoint as ckpt
from . import distributed, runtime
from .evaluation import evaluate_retrieval, format_metrics_table
from .logs import RunLog, read_run_log
from .mining import collate_pairs, group_info, make_group, mine_hard_negatives, to_device
from .objective import GroupLoss, Objective, SetupError, batch_arithmetic
from .optim import build_optimizer, build_scheduler
from .options import TrainOptions
from .plotting import draw_training_curves
from .progress import Progress
from .protocol import RetrievalPlugin
from .sampling import DIRECTIONS, CandidateStream, HardNegativeSampler, prepare

__all__ = ["TrainResult", "NonFiniteLossError", "train", "dry_run", "format_plan"]

logger = logging.getLogger("integrations.retrieval")


class NonFiniteLossError(RuntimeError):
    """A loss component became NaN or infinite; the run stopped without saving."""


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
        curves: the training-curves PNG (rank 0, with ``plots``).
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
    curves: str | None = None
    seconds: float = 0.0


def train(opts: TrainOptions, plugin: RetrievalPlugin) -> TrainResult:
    """Run (or continue) one fine-tuning run of ``plugin``'s model; see the module docstring.

    Call it on every process of a ``torchrun`` job (or once without one).

    Raises:
        NonFiniteLossError: a loss component became NaN/inf (nothing is saved).
        FileExistsError: ``output_dir`` holds checkpoints and neither
            ``resume`` nor ``overwrite`` was given.
        SetupError: settings that cannot work together; ``output_dir`` cannot be written or another run
            holds it (:class:`~.checkpoint.OutputDirInUse`, see :class:`~.checkpoint.RunLock`).
    """
    started = time.perf_counter()
    if not opts.output_dir:
        raise SetupError("no output directory: pass --output-dir (or set output_dir in the config)")
    with runtime.process(opts.device, threads=opts.threads, deterministic=opts.deterministic) as ctx, \
            ckpt.output_dir_lock(opts.output_dir, ctx.device):
        run = _Run(opts, plugin, ctx.device)
        try:
            run.setup()
            result = run.loop()
            if result.finished:
                run.finish(result)
            run.draw_curves(result)
        finally:
            run.close()
        del run  # DDP, optimizer and workers go before the process group does
    result.seconds = time.perf_counter() - started
    return result


def dry_run(opts: TrainOptions, plugin: RetrievalPlugin, *, world: int | None = None) -> dict:
    """Everything :func:`train` checks before its first step, without training or writing anything: the plan.

    Checks the output directory (and the checkpoint a resume would read),
    opens the training, validation and test splits, builds the model with its
    starting weights and scores two pairs of the first from-image group in
    both passes, and works out the batch arithmetic for ``world`` processes
    (default: ``WORLD_SIZE`` of the environment, else 1) and the precision on
    this process's device. Joins no process group.

    Returns:
        A JSON-ready dict; :func:`format_plan` prints it.

    Raises:
        What :func:`train` raises for the same settings before its first step.
    """
    if not opts.output_dir:
        raise SetupError("no output directory: pass --output-dir (or set output_dir in the config)")
    world = world or int(os.environ.get("WORLD_SIZE", "1"))
    device = distributed.default_device(opts.device)
    ckpt.check_output_dir(opts.output_dir)
    resume = ckpt.resume_source(opts.output_dir, resume=opts.resume, overwrite=opts.overwrite)
    if resume is not None:
        ckpt.load_training_checkpoint(resume)
    run = _Run(opts, plugin, device, world=world)
    try:
        run._open_data()
        run._build_trainer(pretrained=resume is None)
        return run.plan(resume)
    finally:
        run.close()


def format_plan(plan: dict) -> str:
    """The lines a dry run prints."""
    splits = "; ".join(f"{name} {s['captions']} captions / {s['images']} images" for name, s in plan["splits"].items())
    return "\n".join([
        "dry run: every check passed; nothing was trained or written",
        f"  output:    {plan['output_dir']} ({'resumes from ' + plan['resume'] if plan['resume'] else 'fresh start'})",
        f"  data:      {splits}",
        f"  model:     {plan['trainable_parameters']:,} trainable parameters; first from-image group scored "
        f"(logits {', '.join(f'{x:.4g}' for x in plan['first_group_logits'])})",
        f"  recipe:    {plan['num_train_steps']} updates (warm-up {plan['warmup_steps']}), lr {plan['learning_rate']:g}, "
        f"{plan['optimizer']}, IAIS {plan['iais']}",
        f"  batch:     {plan['processes']} process(es) x {plan['accumulation']} micro-steps x 2 groups = "
        f"{plan['groups_per_update']} groups per update (train_batch_size {plan['train_batch_size']} x "
        f"{plan['num_gpus_equivalent']} GPU-equivalents)",
        "  mining:    " + ", ".join(f"from {d} {n} candidates -> {k} pairs" for d, (n, k)
                                   in plan["candidates_and_group"].items())
        + f" ({plan['inf_minibatch_size']} per forward); {plan['pairs_per_update']:,} pairs per update",
        f"  precision: {plan['precision']} on {plan['device']}",
    ])


class _Run:
    """The state of a running fine-tuning: data, model, optimizer, objective, outputs.

    With ``world`` given (a dry run), it plans for that many processes, joins
    nothing and writes nothing.
    """

    def __init__(self, opts: TrainOptions, plugin: RetrievalPlugin, device: torch.device, *,
                 world: int | None = None) -> None:
        check = getattr(plugin, "check_options", None)
        if check is not None:  # before anything is opened or written
            check(opts)
        self.opts, self.plugin, self.device = opts, plugin, device
        self.dry = world is not None
        self.is_main, self.world = distributed.rank() == 0, world or distributed.world_size()
        self.log = RunLog(opts.output_dir, enabled=self.is_main and not self.dry, tensorboard=opts.tensorboard)
        self.stream_iter = self.model = self.ddp = None
        self.splits: list = []
        self.ckpt_dir = os.path.join(opts.output_dir, "ckpt")

    def setup(self) -> None:
        """Output directory, data, model and optimizer (restored when resuming), data stream."""
        opts = self.opts
        resume_path = ckpt.open_output_dir(opts.output_dir, resume=opts.resume, overwrite=opts.overwrite,
                                           is_main=self.is_main)
        state = ckpt.load_training_checkpoint(resume_path) if resume_path else None
        self._open_data()
        self._build_trainer(pretrained=state is None)
        self.step = 0
        if state is not None:
            self.step = ckpt.restore_training_state(state, trainer=self.trainer, sampler=self.sampler,
                                                    seed=opts.seed)
            self._warn_changed(state, resume_path)
        else:
            runtime.seed_streams(opts.seed, distributed.rank())
        self.log.truncate_after(self.step)
        self._start_stream()
        self._write_settings()

    def _open_data(self) -> None:
        opts = self.opts
        self.pairs = self.plugin.train_pairs(image_cache=opts.image_cache)
        self.splits.append(self.pairs)
        self.val, self.test = (self.plugin.eval_pairs(s) for s in ("val", "test"))
        self.splits += [p for p in (self.val, self.test) if p is not None]
        gpus = opts.num_gpus_equivalent or self.world
        self.gpus = gpus
        self.accum, iais_scale = batch_arithmetic(opts.train_batch_size, gpus, self.world)
        if gpus != self.world and self.is_main:
            logger.info("num_gpus_equivalent %d on %d process(es): each process accumulates %d micro-steps per update "
                        "to keep the batch of the %d-GPU recipe (by default the GPU count in the config file's name; "
                        "--num-gpus-equivalent %d trains with a batch %gx smaller)", gpus, self.world, self.accum,
                        gpus, self.world, gpus / self.world)
        self.sampler_kwargs = dict(negative_size=opts.negative_size, seed=opts.seed, rank=distributed.rank(),
                                   world_size=self.world)
        try:
            self.sampler = HardNegativeSampler(self.pairs, **self.sampler_kwargs)
            if self.dry:  # the last rank must own captions too
                HardNegativeSampler(self.pairs, **{**self.sampler_kwargs, "rank": self.world - 1})
        except ValueError as err:  # e.g. more processes than images
            raise SetupError(str(err)) from None
        schedule = iaisreg.get_schedule(opts.iais_schedule, opts.num_train_steps, gamma=opts.iais_gamma)
        self.objective = Objective(iais=opts.iais, variant=opts.iais_variant, anchor=opts.iais_anchor,
                                   schedule=schedule, weight=opts.iais_weight, margin=opts.margin,
                                   accumulation=self.accum, iais_scale=iais_scale)

    def _build_trainer(self, *, pretrained: bool) -> None:
        opts, device = self.opts, self.device
        runtime.seed_everything(opts.seed)
        self.model = self.plugin.build_model(dropout=opts.dropout, pretrained=pretrained).to(device)
        self.precision = runtime.resolve_precision(opts.precision, opts.fp16, device)
        self.autocast = runtime.autocast_factory(self.precision, device)
        optimizer = build_optimizer(self.model, optim=opts.optim, learning_rate=opts.learning_rate,
                                    betas=opts.betas, weight_decay=opts.weight_decay, impl=opts.optim_impl)
        scheduler = build_scheduler(optimizer, warmup_steps=opts.warmup_steps, total_steps=opts.num_train_steps,
                                    learning_rate=opts.learning_rate)
        scaler = torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu",
                                      enabled=self.precision == "fp16")
        self.trainer = {"model": self.model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        if self.world > 1 and not self.dry:
            self.ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)

    def plan(self, resume: str | None) -> dict:
        """What this run would do (a dry run), after scoring two pairs of the first from-image group."""
        opts = self.opts
        logits, from_image = self._first_group_logits()
        from_text = len(self.sampler.next("text").images)
        sizes = {d: [n, min(opts.hard_neg_size + 1, n)] for d, n in (("image", from_image), ("text", from_text))}
        splits = {name: {"captions": p.n_captions, "images": p.n_images}
                  for name, p in (("train", self.pairs), ("val", self.val), ("test", self.test)) if p is not None}
        return {"output_dir": opts.output_dir, "resume": resume, "processes": self.world, "device": str(self.device),
                "precision": self.precision, "num_gpus_equivalent": self.gpus, "accumulation": self.accum,
                "train_batch_size": opts.train_batch_size, "groups_per_update": 2 * self.accum * self.world,
                "candidates_and_group": sizes, "inf_minibatch_size": opts.inf_minibatch_size,
                "pairs_per_update": self.accum * self.world * sum(n + k for n, k in sizes.values()),
                "num_train_steps": opts.num_train_steps, "warmup_steps": opts.warmup_steps,
                "learning_rate": opts.learning_rate, "optimizer": f"{opts.optim} ({opts.optim_impl} implementation)",
                "iais": opts.iais, "splits": splits, "first_group_logits": logits, "plugin": self.plugin.describe(),
                "trainable_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad)}

    @torch.no_grad()
    def _first_group_logits(self) -> tuple[list[float], int]:
        """Logits of the positive and one negative of the first from-image group (mining and training batches),
        and the group's candidate count."""
        prepared = prepare(self.pairs, self.sampler.next("image"))
        cand, rows = prepared.candidates, [0, 1]
        self.model.eval()
        out = []
        for phase in ("mining", "training"):
            batch = collate_pairs(prepared, [cand.captions[r] for r in rows], [cand.images[r] for r in rows],
                                  self.plugin.collate, group=group_info(prepared, phase, rows))
            with self.autocast() if self.autocast is not None else contextlib.nullcontext():
                out += self.model(**to_device(batch, self.device)).logits.float().tolist()
        if not all(math.isfinite(x) for x in out):
            raise SetupError(f"the model scores the first training pairs as {out}: check the checkpoint and configs")
        return out, len(cand.captions)

    def _warn_changed(self, state: dict, path: str) -> None:
        saved = state.get("options", state.get("config", {}))
        changed = sorted(k for k in ("num_train_steps", "train_batch_size", "negative_size", "hard_neg_size",
                                     "learning_rate", "margin", "warmup_steps", "optim", "optim_impl")
                         if k in saved and saved[k] != getattr(self.opts, k))
        if self.is_main:
            if changed:
                logger.warning("resuming with settings changed since the checkpoint: %s", changed)
            logger.info("resumed from %s at step %d", path, self.step)

    def _start_stream(self) -> None:
        """The decoded candidate sets, in worker processes when ``n_workers`` > 0."""
        opts = self.opts
        stream = CandidateStream(self.pairs, self.sampler_kwargs, self.sampler.state_dict())
        if opts.n_workers > 0:
            loader = torch.utils.data.DataLoader(
                stream, batch_size=None, num_workers=opts.n_workers, prefetch_factor=4,
                pin_memory=opts.pin_mem and self.device.type == "cuda",
                generator=torch.Generator())  # own generator: the global RNG stays untouched
            self.stream_iter = iter(loader)
        else:
            self.stream_iter = iter(stream)

    def _write_settings(self) -> None:
        if not self.is_main:
            return
        opts = self.opts
        meta = {"options": dataclasses.asdict(opts), "plugin": self.plugin.describe(),
                "world_size": self.world, "process_group": distributed.backend(), "num_gpus_equivalent": self.gpus,
                "accumulation": self.accum, "precision": self.precision, "device": str(self.device),
                "n_train_captions": self.pairs.n_captions, "n_train_images": self.pairs.n_images}
        with open(os.path.join(opts.output_dir, "log", "hps.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2)
        if not opts.quiet:
            iais = "off" if opts.iais == "none" else (f"{opts.iais} ({opts.iais_variant}, anchor {opts.iais_anchor}, "
                                                      f"{opts.iais_schedule} schedule)")
            logger.info("%d process(es) on %s, %s; %d train captions / %d images; %d micro-steps x 2 groups per "
                        "process per update (train_batch_size %d x %d GPU-equivalents / %d processes); IAIS %s",
                        self.world, self.device, self.precision, self.pairs.n_captions, self.pairs.n_images,
                        self.accum, opts.train_batch_size, self.gpus, self.world, iais)

    # ------------------------------------------------------------------ the loop

    def loop(self) -> TrainResult:
        """Train until ``num_train_steps``, a signal or ``stop_after``; checkpoint on the way."""
        opts = self.opts
        save_steps = opts.valid_steps if opts.save_steps is None else opts.save_steps
        history, pending, steps_this_run, last_ckpt, reason = [], [], 0, None, "done"
        self.clock = _Throughput()
        with runtime.StopRequest() as self.stop, self._progress_bar() as self.bar:
            while self.step < opts.num_train_steps:
                pending.append(self.train_step())
                steps_this_run += 1
                validating = opts.valid_steps > 0 and self.step % opts.valid_steps == 0 \
                    and self.step < opts.num_train_steps
                stopping = opts.stop_after is not None and steps_this_run >= opts.stop_after
                saving = self.step >= opts.num_train_steps or (save_steps > 0 and self.step % save_steps == 0)
                if not (self.step % opts.log_steps == 0 or validating or stopping or saving):
                    continue  # no host synchronisation until the next boundary
                records, stop_now = self._flush(pending)
                history += records
                pending = []
                if validating and self.validate() is not None:
                    ckpt.save_weights(self.model, self.ckpt_dir, str(self.step))
                    stop_now = self._stop_requested()  # a signal during the (long) validation stops here
                if stop_now:
                    reason = "signal"
                elif stopping and self.step < opts.num_train_steps:
                    reason, stop_now = "stop_after", True
                if stop_now or saving:
                    last_ckpt = self.save()
                if stop_now:
                    break
        return TrainResult(step=self.step, finished=self.step >= opts.num_train_steps, stop_reason=reason,
                           checkpoint=last_ckpt, history=history if self.is_main else [])

    def train_step(self) -> dict:
        """One optimizer step: ``A`` micro-steps of both directions, without a host synchronisation.

        Returns what :meth:`_flush` needs to check and log it (losses and gradient norm as device tensors).
        """
        lam = self.objective.lam(self.step)
        t0 = time.perf_counter()
        losses, groups, pairs_seen = [], [], 0
        for micro in range(self.accum):
            for direction in DIRECTIONS:
                sync = self.ddp is None or (micro == self.accum - 1 and direction == DIRECTIONS[-1])
                loss, seen, rows = self.train_group(direction, lam, sync)
                losses.append((micro, direction, loss))
                groups.append(rows)
                pairs_seen += seen
        grad_norm, lr = self._optimizer_step()
        self.step += 1
        return {"step": self.step, "losses": losses, "groups": groups, "grad_norm": grad_norm, "lambda": lam,
                "lr": lr,
                **self.clock.add(time.perf_counter() - t0, len(losses) * self.world, pairs_seen * self.world)}

    def train_group(self, direction: str, lam: float, sync: bool) -> tuple[GroupLoss, int, tuple[list, list]]:
        """Mine, then train one group of ``direction``; its losses, the pairs it scored and trained, and its
        rows' ``(captions, images)``."""
        expected = self.sampler.next(direction)
        prepared = next(self.stream_iter)
        if prepared.candidates != expected:
            raise RuntimeError("data stream out of step with the sampler (a bug)")
        rows = mine_hard_negatives(self.model, prepared, self.plugin.collate, hard_neg_size=self.opts.hard_neg_size,
                                   chunk_size=self.opts.inf_minibatch_size, device=self.device,
                                   autocast=self.autocast)
        group = make_group(prepared, rows, self.plugin.collate, self.device)
        model = self.ddp if self.ddp is not None else self.model
        row0 = torch.zeros(1, dtype=torch.long, device=self.device) if self.objective.uses_iais else None
        with contextlib.nullcontext() if sync else self.ddp.no_sync():
            with self.autocast() if self.autocast is not None else contextlib.nullcontext():
                out = model(**group.batch, scores_rows=row0)
            loss = self.objective(out, direction, lam)
            self.trainer["scaler"].scale(loss.total).backward()
        detached = GroupLoss(*(t.detach() for t in loss))
        return detached, group.n_scored + len(group.captions), (group.captions, group.images)

    def _flush(self, pending: list[dict]) -> tuple[list[dict], bool]:
        """Check and log the steps done since the last boundary: one host synchronisation, one all-reduce.

        Raises :class:`NonFiniteLossError` naming the first step, group and component that was not
        finite; returns the steps' log records and whether a process received a stop signal.
        """
        host = [self._local_stats(p) for p in pending]
        local = {"bad": float(any(h["bad"] for h in host)), "stop": 1.0 if self.stop.signum is not None else 0.0}
        for i, h in enumerate(host):
            local.update({f"{i}:{k}": v for k, v in h["stats"].items()})
        total = distributed.all_reduce_sum(local, self.device)
        if total["bad"] > 0:
            bad = next((h for h in host if h["bad"]), None)
            raise NonFiniteLossError(bad["message"] if bad else "another process reported a non-finite loss at "
                                     f"step {pending[0]['step']} or later; stopping without saving")
        records = []
        for i, p in enumerate(pending):
            stats = {k: total[f"{i}:{k}"] / self.world for k in host[i]["stats"]}
            record = {"step": p["step"], **stats, "lambda": p["lambda"], "lr": p["lr"],
                      "grad_norm": host[i]["grad_norm"], **{k: p[k] for k in _Throughput.KEYS}}
            self._report(record)
            records.append(record)
        return records, total["stop"] > 0

    def _local_stats(self, p: dict) -> dict:
        """One step's numbers on the host: named statistics, or why the step was not finite."""
        losses = p["losses"]
        values = torch.stack([torch.stack(list(loss)) for _, _, loss in losses]).double().cpu()
        grad_norm = float(p["grad_norm"])
        finite = torch.isfinite(values)
        by_dir = {d: values[[i for i, (_, dd, _) in enumerate(losses) if dd == d]] for d in DIRECTIONS}
        stats = {"loss": float(values[:, 2].sum()), "rank_loss": float(values[:, 0].mean()),
                 "iais_loss": float(values[:, 1].mean()), "iais_image": float(by_dir["image"][:, 1].mean()),
                 "iais_text": float(by_dir["text"][:, 1].mean())}
        out = {"bad": False, "stats": stats, "grad_norm": grad_norm}
        if not bool(finite.all()):
            g, c = [int(x) for x in (~finite).nonzero()[0]]
            micro, direction, _ = losses[g]
            out.update(bad=True, message=(
                f"non-finite {GroupLoss._fields[c]} loss ({values[g, c].item()}) at step {p['step']} (micro-step "
                f"{micro + 1}/{self.accum}, from-{direction} group of {self._group_names(direction, *p['groups'][g])}"
                f", rank {distributed.rank()}); stopping without saving (last checkpoint: "
                f"{ckpt.latest_checkpoint(self.ckpt_dir) or 'none'})"))
        elif not math.isfinite(grad_norm) and self.precision != "fp16":  # fp16: the scaler skips such steps
            out.update(bad=True, message=f"non-finite gradient norm ({grad_norm}) at step {p['step']} with finite "
                                         f"losses; stopping without saving")
        return out

    def _group_names(self, direction: str, captions: list, images: list, shown: int = 8) -> str:
        """A group named by its ids: the image and its captions, or the caption and its images (positive first)."""
        caption_ids, image_ids = self.pairs.caption_ids, self.pairs.image_ids
        if direction == "image":
            anchor, kind, others = f"image {image_ids[images[0]]!r}", "captions", [caption_ids[c] for c in captions]
        else:
            anchor, kind, others = f"caption {caption_ids[captions[0]]!r}", "images", [image_ids[i] for i in images]
        more = f" and {len(others) - shown} more" if len(others) > shown else ""
        return f"{anchor} with {kind} {', '.join(repr(x) for x in others[:shown])}{more}"

    def _optimizer_step(self) -> tuple[torch.Tensor, float]:
        """Unscale, clip, step; returns ``(gradient norm (a device tensor), learning rate used)``."""
        optimizer, scheduler, scaler = (self.trainer[k] for k in ("optimizer", "scheduler", "scaler"))
        scaler.unscale_(optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.opts.grad_norm if self.opts.grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        lr = scheduler.get_last_lr()[0]
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return grad_norm, lr

    # ------------------------------------------------------------------ outputs

    @property
    def _shows_progress(self) -> bool:
        return self.opts.progress and not self.opts.quiet and self.is_main

    def _progress_bar(self) -> Progress:
        return Progress(self.opts.num_train_steps, initial=self.step, unit="step", desc=self.opts.run_name or "train",
                        enabled=self._shows_progress)

    def _report(self, record: dict) -> None:
        if not self.is_main:
            return
        self.log.record(record)
        if self.precision == "fp16":
            self.log.scalars("train/", {"loss_scale": self.trainer["scaler"].get_scale()}, self.step)
        postfix = {"loss": f"{record['loss']:.4f}", "rank": f"{record['rank_loss']:.4f}"}
        if self.objective.uses_iais:
            postfix.update(iais=f"{record['iais_loss']:.4f}", lam=f"{record['lambda']:.3g}")
        postfix["groups/s"] = f"{record['groups_per_s']:.1f}"
        self.bar.set_postfix(postfix)
        self.bar.update(1)

    def _stop_requested(self) -> bool:
        flag = {"stop": 1.0 if self.stop.signum is not None else 0.0}
        return distributed.all_reduce_sum(flag, self.device)["stop"] > 0

    def evaluate(self, pairs) -> dict:
        return evaluate_retrieval(self.model, pairs, self.plugin.collate, batch_size=self.opts.inf_minibatch_size,
                                  amp_dtype=runtime.AMP_DTYPES.get(self.precision),
                                  progress=self._shows_progress)

    def validate(self) -> dict | None:
        """Full-ranking validation (when the run has a val split and ``full_val``)."""
        if self.val is None or not self.opts.full_val:
            return None
        metrics = self.evaluate(self.val)
        self.log.evaluation(self.step, "val", metrics, final=False)
        if self.is_main and not self.opts.quiet:
            label = f"{self.opts.run_name}, step" if self.opts.run_name else "step"
            self.bar.write(f"{label} {self.step}: validation RSUM {metrics['rsum']:.2f} "
                           f"(IR@1 {100 * metrics['img_r1']:.2f}, TR@1 {100 * metrics['txt_r1']:.2f})")
        return metrics

    def save(self) -> str | None:
        meta = {"options": dataclasses.asdict(self.opts), "plugin": self.plugin.describe()}
        return ckpt.save_training_state(self.ckpt_dir, self.step, trainer=self.trainer, sampler=self.sampler,
                                        keep=self.opts.keep_checkpoints, meta=meta)

    def finish(self, result: TrainResult) -> None:
        """Final weights, and the final val/test evaluation (``final_eval``)."""
        if result.checkpoint is None:  # already complete when started (resumed a finished run)
            result.checkpoint = ckpt.latest_checkpoint(self.ckpt_dir)
        result.model_path = ckpt.save_weights(self.model, self.ckpt_dir, f"{self.step}_final")
        if not self.opts.final_eval or self.stop.signum is not None:
            return
        for name, pairs in (("val", self.val), ("test", self.test)):
            if pairs is not None:
                metrics = self.evaluate(pairs)
                setattr(result, f"{name}_metrics", metrics)
                self.log.evaluation(self.step, name, metrics, final=True)
                self._write_metrics(name, pairs, metrics)

    def _write_metrics(self, name: str, pairs, metrics: dict) -> None:
        if not self.is_main:
            return
        opts = self.opts
        path = os.path.join(opts.output_dir, "results", f"{name}_metrics.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"split": name, **pairs.describe(), "step": self.step, "iais": opts.iais, "metrics": metrics},
                      handle, indent=2)
        title = (f"{name} ({metrics['n_captions']} captions x {metrics['n_images']} images), step {self.step}"
                 f"{', ' + opts.run_name if opts.run_name else ''}:")
        print(format_metrics_table(metrics, title), flush=True)

    def draw_curves(self, result: TrainResult) -> None:
        """With ``plots``: the training curves of the whole run, from its JSONL logs, as a PNG (rank 0)."""
        if not (self.opts.plots and self.is_main):
            return
        path = os.path.join(self.opts.output_dir, "results", "training_curves.png")
        records = read_run_log(self.opts.output_dir)
        result.curves = str(draw_training_curves({self.opts.run_name or "this run": records}, path=path))
        print(f"training curves: {result.curves}", flush=True)

    def close(self) -> None:
        """Stop the data workers, close the databases and the logs (also after an error)."""
        self.log.close()
        if self.stream_iter is not None and hasattr(self.stream_iter, "_shutdown_workers"):
            self.stream_iter._shutdown_workers()
        self.stream_iter = None
        for pairs in self.splits:
            try:
                pairs.close()
            except Exception:  # never mask the run's own error
                pass


class _Throughput:
    """Training throughput of this invocation: groups and pairs per second of training time."""

    KEYS = ("step_seconds", "groups_per_s", "pairs_per_s")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.groups = self.pairs = 0

    def add(self, seconds: float, groups: int, pairs: int) -> dict[str, Any]:
        self.seconds += seconds
        self.groups += groups
        self.pairs += pairs
        return {"step_seconds": seconds, "groups_per_s": self.groups / self.seconds,
                "pairs_per_s": self.pairs / self.seconds}
