"""Benchmark of hard-negative fine-tuning throughput, with and without IAIS, in one run.

Writes a random txt_db/img_db pair in the original formats (default 100 images
x 5 captions, 2048-d region features, 10-36 boxes, 3-20 word pieces), then
runs short fine-tuning runs of a small random UNITER without IAIS and with
``--iais singular`` (same seed, same data, same groups), several rounds. The
order of the two kinds alternates from round to round (``--first`` names the
kind that starts), so neither always runs on a warmer or a cooler machine. It
reports each kind's median step time (the first steps of every run are
dropped as warm-up), and the IAIS overhead: the median over rounds of the
per-round ratio of medians, with its minimum and maximum. A step is
``train_batch_size`` micro-steps x 2 groups, each group mined from
``1 + negative_size`` scored pairs and trained on ``1 + hard_neg_size`` pairs.

    python bench/train.py                      # CPU, small model (hidden 128, 2 layers)
    python bench/train.py --device cuda --precision fp16 --hidden 768 --layers 12 --heads 12 \\
        --negative-size 399 --hard-neg-size 31 --inf-minibatch-size 400 --train-batch-size 8

``add_run_arguments``, ``compare`` and ``summarise`` are also used by ``bench/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from integrations.retrieval import TrainOptions, train  # noqa: E402
from integrations.uniter.config import UniterData, UniterModelConfig  # noqa: E402
from integrations.uniter.data.synthetic import make_retrieval_dbs  # noqa: E402
from integrations.uniter.plugin import UniterPlugin  # noqa: E402

#: the per-group sizes of a run, as TrainOptions fields
SIZES = ("train_batch_size", "negative_size", "hard_neg_size", "inf_minibatch_size")


def model_config(hidden: int, layers: int, heads: int) -> UniterModelConfig:
    """A UNITER config of this size (intermediate 4 x hidden)."""
    return UniterModelConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=4 * hidden)


def synthetic_plugin(root: str, cfg: UniterModelConfig, *, images: int, captions_per_image: int) -> UniterPlugin:
    """A UNITER plug-in on a random training set written under ``root``."""
    t0 = time.perf_counter()
    dbs = make_retrieval_dbs(root, n_images=images, captions_per_image=captions_per_image, compressed=False, seed=0)
    print(f"wrote {images * captions_per_image} captions x {images} images in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return UniterPlugin(UniterData(train_txt_dbs=[dbs.txt_db], train_img_dbs=[dbs.img_db]), cfg)


def timed_run(plugin: UniterPlugin, out: str, iais: str, *, steps: int, warmup: int, precision: str, device: str,
              sizes: dict) -> tuple[list[float], int | None]:
    """One short run: its step times after ``warmup`` and, on CUDA, its peak allocated memory in bytes."""
    opts = TrainOptions(output_dir=out, num_train_steps=steps, warmup_steps=1, valid_steps=10 ** 9, n_workers=0,
                        fp16=precision == "fp16", learning_rate=5e-5, iais=iais, precision=precision,
                        device=device, save_steps=0, keep_checkpoints=1, final_eval=False, progress=False,
                        tensorboard=False, quiet=True, **sizes)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train(opts, plugin)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return [s["step_seconds"] for s in result.history[warmup:]], peak


def compare(plugin: UniterPlugin, root: str, *, iais: str, rounds: int, first: str = "none", **run) -> dict:
    """Runs without and with IAIS, alternating which kind starts each round.

    Returns ``times`` (kind -> step times), ``ratios`` (per round, median with
    IAIS / median without) and ``peaks`` (kind -> largest peak memory, bytes, or None).
    """
    kinds = ["none", iais] if first == "none" else [iais, "none"]
    times: dict[str, list[float]] = {"none": [], iais: []}
    peaks: dict[str, int | None] = {"none": None, iais: None}
    ratios: list[float] = []
    for r in range(rounds):
        medians = {}
        for kind in (kinds if r % 2 == 0 else kinds[::-1]):
            steps, peak = timed_run(plugin, os.path.join(root, f"run_{run['precision']}_{kind}_{r}"), kind, **run)
            times[kind] += steps
            medians[kind] = statistics.median(steps)
            if peak is not None:
                peaks[kind] = max(peaks[kind] or 0, peak)
        ratios.append(medians[iais] / medians["none"])
    return {"times": times, "ratios": ratios, "peaks": peaks}


def summarise(runs: dict, sizes: dict) -> dict:
    """Per kind: median step time, steps/groups/pairs per second; the overhead ratio's median, min and max."""
    groups = 2 * sizes["train_batch_size"]
    pairs = groups * (2 + sizes["negative_size"] + sizes["hard_neg_size"])  # scored + trained
    kinds = {}
    for kind, values in runs["times"].items():
        median = statistics.median(values)
        kinds[kind] = {"median_step_s": median, "steps_per_s": 1 / median, "groups_per_s": groups / median,
                       "pairs_per_s": pairs / median, "timed_steps": len(values), "peak_bytes": runs["peaks"][kind]}
    ratios = runs["ratios"]
    return {"kinds": kinds, "overhead_ratio": statistics.median(ratios), "overhead_min": min(ratios),
            "overhead_max": max(ratios), "round_ratios": ratios}


def add_run_arguments(p, *, hidden: int = 128, layers: int = 2, heads: int = 4, steps: int = 12) -> None:
    """The flags of a comparison: synthetic set, model size, per-group sizes (:data:`SIZES`), steps, rounds."""
    p.add_argument("--images", type=int, default=100, help="images of the synthetic training set")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--hidden", type=int, default=hidden)
    p.add_argument("--layers", type=int, default=layers)
    p.add_argument("--heads", type=int, default=heads)
    p.add_argument("--train-batch-size", type=int, default=2)
    p.add_argument("--negative-size", type=int, default=63)
    p.add_argument("--hard-neg-size", type=int, default=15)
    p.add_argument("--inf-minibatch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=steps, help="steps per run (the first --warmup are not timed)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4, help="runs of each kind; the order alternates per round")


def main() -> int:
    import logging

    logging.getLogger("integrations.uniter").setLevel(logging.ERROR)  # "no pre-trained checkpoint"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--first", choices=("none", "iais"), default="none", help="the kind that runs first in round 1")
    p.add_argument("--iais", choices=("singular", "distributed"), default="singular")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sizes = {key: getattr(args, key) for key in SIZES}
    with tempfile.TemporaryDirectory() as root:
        plugin = synthetic_plugin(root, model_config(args.hidden, args.layers, args.heads), images=args.images,
                                  captions_per_image=args.captions_per_image)
        runs = compare(plugin, root, iais=args.iais, rounds=args.rounds, first=args.first, steps=args.steps,
                       warmup=args.warmup, precision=args.precision, device=args.device, sizes=sizes)
    summary = summarise(runs, sizes)
    ratio, low, high = summary["overhead_ratio"], summary["overhead_min"], summary["overhead_max"]
    setting = (f"hidden {args.hidden}, {args.layers} layers, {args.heads} heads; {args.train_batch_size} micro-steps "
               f"x 2 groups per step; {args.negative_size} scored -> {args.hard_neg_size} hard negatives; "
               f"{args.device}, {args.precision}, {torch.get_num_threads()} threads; {args.rounds} rounds, "
               f"{args.first} first")
    print(setting)
    for kind, s in summary["kinds"].items():
        print(f"  IAIS {kind:12s} {s['median_step_s'] * 1000:8.1f} ms/step  {s['groups_per_s']:7.1f} groups/s  "
              f"{s['pairs_per_s']:8.0f} pairs/s  ({s['timed_steps']} timed steps)")
    print(f"  IAIS overhead: x{ratio:.3f} step time ({100 * (ratio - 1):+.1f}%), per-round ratios "
          f"{100 * (low - 1):+.1f}% .. {100 * (high - 1):+.1f}%")
    print(json.dumps({"setting": setting, "summary": summary["kinds"], "overhead_ratio": ratio,
                      "round_ratios": summary["round_ratios"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
