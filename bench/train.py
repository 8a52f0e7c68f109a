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


def main() -> int:
    import logging

    logging.getLogger("integrations.uniter").setLevel(logging.ERROR)  # "no pre-trained checkpoint"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--train-batch-size", type=int, default=2)
    p.add_argument("--negative-size", type=int, default=63)
    p.add_argument("--hard-neg-size", type=int, default=15)
    p.add_argument("--inf-minibatch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=12, help="steps per run (the first --warmup are not timed)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4, help="runs of each kind; the order alternates per round")
    p.add_argument("--first", choices=("none", "iais"), default="none", help="the kind that runs first in round 1")
    p.add_argument("--iais", choices=("singular", "distributed"), default="singular")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model_cfg = UniterModelConfig(hidden_size=args.hidden, num_hidden_layers=args.layers,
                                  num_attention_heads=args.heads, intermediate_size=4 * args.hidden)
    times: dict[str, list[float]] = {"none": [], args.iais: []}
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        dbs = make_retrieval_dbs(root, n_images=args.images, captions_per_image=args.captions_per_image,
                                 compressed=False, seed=0)
        print(f"wrote {args.images * args.captions_per_image} captions x {args.images} images in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        plugin = UniterPlugin(UniterData(train_txt_dbs=[dbs.txt_db], train_img_dbs=[dbs.img_db]), model_cfg)
        kinds = ["none", args.iais] if args.first == "none" else [args.iais, "none"]
        for r in range(args.rounds):
            medians = {}
            for mode in (kinds if r % 2 == 0 else kinds[::-1]):
                out = os.path.join(root, f"run_{mode}_{r}")
                opts = TrainOptions(output_dir=out, num_train_steps=args.steps, train_batch_size=args.train_batch_size,
                                    negative_size=args.negative_size, hard_neg_size=args.hard_neg_size,
                                    inf_minibatch_size=args.inf_minibatch_size, warmup_steps=1, valid_steps=10 ** 9,
                                    n_workers=0, fp16=args.precision == "fp16", learning_rate=5e-5, iais=mode,
                                    precision=args.precision, device=args.device, save_steps=0, keep_checkpoints=1,
                                    final_eval=False, progress=False, tensorboard=False, quiet=True)
                result = train(opts, plugin)
                steps = [s["step_seconds"] for s in result.history[args.warmup:]]
                times[mode] += steps
                medians[mode] = statistics.median(steps)
            ratios.append(medians[args.iais] / medians["none"])

    groups = 2 * args.train_batch_size
    pairs = groups * (2 + args.negative_size + args.hard_neg_size)  # scored + trained
    summary = {}
    for mode, values in times.items():
        median = statistics.median(values)
        summary[mode] = {"median_step_s": median, "steps_per_s": 1 / median, "groups_per_s": groups / median,
                         "pairs_per_s": pairs / median, "timed_steps": len(values)}
    ratio, low, high = statistics.median(ratios), min(ratios), max(ratios)
    setting = (f"hidden {args.hidden}, {args.layers} layers, {args.heads} heads; {args.train_batch_size} micro-steps "
               f"x 2 groups per step; {args.negative_size} scored -> {args.hard_neg_size} hard negatives; "
               f"{args.device}, {args.precision}, {torch.get_num_threads()} threads; {args.rounds} rounds, "
               f"{args.first} first")
    print(setting)
    for mode, s in summary.items():
        print(f"  IAIS {mode:12s} {s['median_step_s'] * 1000:8.1f} ms/step  {s['groups_per_s']:7.1f} groups/s  "
              f"{s['pairs_per_s']:8.0f} pairs/s  ({s['timed_steps']} timed steps)")
    print(f"  IAIS overhead: x{ratio:.3f} step time ({100 * (ratio - 1):+.1f}%), per-round ratios "
          f"{100 * (low - 1):+.1f}% .. {100 * (high - 1):+.1f}%")
    print(json.dumps({"setting": setting, "summary": summary, "overhead_ratio": ratio, "round_ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
