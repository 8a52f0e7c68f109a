"""One prepared GPU check: every GPU measurement of the project in one run of a few minutes.

    python bench/gpu_check.py [--out DIR]          # one CUDA GPU; about 4 minutes on an H100/H200
    python bench/gpu_check.py --smoke --out DIR    # the same code paths on the CPU at toy sizes

Sections (``--sections`` picks some, e.g. to rerun one that failed):

1. ``loss``: forward+backward of ``iaisreg.torch.iais`` at the paper's shapes
   (``bench/loss.py``'s batch: 8 pairs, 12 heads, text padded to 62, 36/100
   regions), every mode x anchor: the per-sample loop
   (``tests/reference_loop.py``, the authors' structure), the vectorised loss
   (masks only) eager and under ``torch.compile(fullgraph=True)``. The losses
   are checked to agree before timing.
2. ``syncs``: forward and backward of every mode x anchor (float32, bfloat16,
   float16 scores) under ``torch.cuda.set_sync_debug_mode("error")``.
3. ``train``: the engine (``integrations.retrieval.train``) with the UNITER
   plug-in at UNITER-base shapes (random weights, synthetic databases):
   groups/s with and without IAIS in each precision, the IAIS overhead and
   the peak GPU memory (``bench/train.py``'s ``compare``).
4. ``eval``: pairs/s of ``score_matrix`` at UNITER-base shapes in bf16, and
   the projected wall time of Flickr30k 1K x 5K and COCO 5K x 25K.
5. ``torchrun``: ``python -m torch.distributed.run -m integrations.uniter.finetune``
   for a few steps with ``--iais singular``, then ``--resume auto`` with more steps.

Writes ``gpu_check.json`` (after every section, so a cut-off run keeps what
it measured) and ``gpu_check.md`` (tables for ``docs/performance.md``), and
prints the tables. Exit status: 0, 1 when a section raised (recorded in the
JSON), 2 without CUDA (and without ``--smoke``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import iaisreg.torch as it  # noqa: E402
from bench.evaluate import synthetic_split, timed_scores  # noqa: E402
from bench.loss import make_batch, timeit  # noqa: E402  (also puts tests/ on sys.path)
from bench.train import SIZES, add_run_arguments, compare, model_config, summarise, synthetic_plugin  # noqa: E402
from integrations.retrieval.options import read_json_object  # noqa: E402
from integrations.retrieval.runtime import AMP_DTYPES  # noqa: E402
from integrations.uniter.data.synthetic import make_retrieval_dbs  # noqa: E402
from integrations.uniter.model import UniterForRetrieval  # noqa: E402
from reference_loop import reference_iais  # noqa: E402

SECTIONS = ("loss", "syncs", "train", "eval", "torchrun")
CASES = [(mode, anchor) for mode in ("singular", "distributed") for anchor in ("V", "L")]
SYNC_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: full-ranking test sets: captions x images
RANKINGS = {"Flickr30k 1K x 5K": 5_000 * 1_000, "COCO 5K x 25K": 25_000 * 5_000}
#: the small model of the torchrun section
TORCHRUN_MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
#: --smoke: toy sizes on the CPU (flags given explicitly still win)
SMOKE = dict(device="cpu", samples=2, loss_heads=2, regions=[36], repeats=2, compile="first", hidden=32, layers=2,
             heads=2, images=8, captions_per_image=2, train_batch_size=1, negative_size=7, hard_neg_size=3,
             inf_minibatch_size=8, steps=3, warmup=1, rounds=2, precisions=["bf16", "fp32"], eval_images=6,
             eval_batch_size=16)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".", help="directory for gpu_check.json and gpu_check.md")
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (bf16/fp32 instead of fp16), in seconds")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS))
    p.add_argument("--device", default="cuda")
    g = p.add_argument_group("1-2. loss")
    g.add_argument("--samples", type=int, default=8, help="positive pairs per batch")
    g.add_argument("--loss-heads", type=int, default=12)
    g.add_argument("--regions", type=int, nargs="+", default=[36, 100])
    g.add_argument("--repeats", type=int, default=20)
    g.add_argument("--compile", choices=("all", "first", "none"), default="all", help="cases timed compiled")
    g = p.add_argument_group("3-4. training and evaluation (UNITER)")
    add_run_arguments(g, hidden=768, layers=12, heads=12, steps=10)
    g.add_argument("--precisions", nargs="+", choices=("fp32", "fp16", "bf16"), default=["bf16", "fp16"])
    g.add_argument("--eval-images", type=int, default=100, help="images of the evaluation set (x captions-per-image)")
    g.add_argument("--eval-batch-size", type=int, default=400)
    g = p.add_argument_group("5. torchrun")
    g.add_argument("--torchrun-procs", type=int, default=1, help="processes (NCCL needs one GPU each)")
    g.add_argument("--torchrun-steps", type=int, nargs=2, default=[3, 5], metavar=("FIRST", "RESUMED"),
                   help="num_train_steps of the first and the resumed invocation")
    args = p.parse_args(argv)
    if args.smoke:
        p.set_defaults(**SMOKE)
        args = p.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


# ----------------------------------------------------------------- 1. the loss


def loss_batch(n_regions: int, args: argparse.Namespace):
    """``bench/loss.py``'s batch, cut to ``--samples`` pairs and ``--loss-heads`` heads."""
    scores, t, v, text, image = make_batch(n_regions, args.device)
    b, h = args.samples, args.loss_heads
    return scores[:b, :h].contiguous(), t[:b], v[:b], text[:b], image[:b]


def fwd_bwd(fn, scores: torch.Tensor):
    """A closure running ``fn(x).backward()`` on a leaf copy of ``scores``."""
    x = scores.clone().requires_grad_(True)

    def step():
        x.grad = None
        fn(x).backward()

    return step


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    diff = float((a.detach().double() - b.detach().double()).abs())
    return {"agree": bool(torch.allclose(a.detach(), b.detach(), rtol=1e-4, atol=1e-6)), "max_abs_diff": diff}


def compile_loss(fn, scores: torch.Tensor, eager: torch.Tensor, cuda: bool) -> tuple:
    """``torch.compile(fn, fullgraph=True)``, its first forward+backward timed; ``(compiled or None, facts)``."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    x = scores.clone().requires_grad_(True)
    t0 = time.perf_counter()
    try:
        out = compiled(x)
        out.backward()
        if cuda:
            torch.cuda.synchronize()
    except Exception as err:  # noqa: BLE001 - the eager and loop timings still count
        return None, {"compile_error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"}
    return compiled, {"compile_s": time.perf_counter() - t0, "compiled_agree": agreement(out, eager)["agree"]}


def loss_case(batch, mode: str, anchor: str, args: argparse.Namespace, compiled: bool) -> dict:
    """Loop vs vectorised (eager, compiled) at one shape, mode and anchor; times in ms."""
    scores, t, v, text, image = batch
    device = args.device.split(":")[0]
    fns = {"loop": lambda x: reference_iais(x, text, image, mode=mode, anchor=anchor),
           "vector": lambda x: it.iais(x, text_mask=t, image_mask=v, mode=mode, anchor=anchor)}
    eager = fns["vector"](scores)
    row = {"mode": mode, "anchor": anchor, "loss": float(eager), **agreement(eager, fns["loop"](scores))}
    if compiled:
        fn, facts = compile_loss(fns["vector"], scores, eager, device == "cuda")
        row.update(facts)
        if fn is not None:
            fns["compiled"] = fn
    for name, fn in fns.items():
        row[f"{name}_ms"] = 1e3 * timeit(fwd_bwd(fn, scores), args.repeats, device)
    row["loop_over_vector"] = row["loop_ms"] / row["vector_ms"]
    if "compiled" in fns:
        row["loop_over_compiled"] = row["loop_ms"] / row["compiled_ms"]
        row["vector_over_compiled"] = row["vector_ms"] / row["compiled_ms"]
    return row


def section_loss(args: argparse.Namespace) -> dict:
    rows = []
    for n_regions in args.regions:
        batch = loss_batch(n_regions, args)
        for mode, anchor in CASES:
            compiled = args.compile == "all" or (args.compile == "first" and not rows)
            row = loss_case(batch, mode, anchor, args, compiled)
            rows.append({"regions": n_regions, "n": batch[0].shape[-1], **row})
            extra = f", compiled {row['compiled_ms']:.2f} ms" if "compiled_ms" in row else ""
            print(f"loss: {n_regions} regions, {mode} {anchor}: loop {row['loop_ms']:.2f} ms, vector "
                  f"{row['vector_ms']:.2f} ms{extra}", file=sys.stderr)
    best = [r["loop_ms"] / min(r["vector_ms"], r.get("compiled_ms", float("inf"))) for r in rows]
    return {"shape": {"samples": args.samples, "heads": args.loss_heads, "text_padded": 62}, "repeats": args.repeats,
            "cases": rows, "all_agree": all(r["agree"] and r.get("compiled_agree", True) for r in rows),
            "min_loop_over_best": min(best)}


# ----------------------------------------------------------------- 2. host synchronisations


@contextlib.contextmanager
def sync_errors(enabled: bool):
    """Any host synchronisation raises inside (CUDA); "default" is restored after."""
    if not enabled:
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def sync_case(scores: torch.Tensor, t, v, mode: str, anchor: str, check: bool) -> dict:
    """Forward, then backward, each under :func:`sync_errors`; a failure is recorded, not raised."""
    x = scores.clone().requires_grad_(True)
    loss_fn = lambda: it.iais(x, text_mask=t, image_mask=v, mode=mode, anchor=anchor)  # noqa: E731
    row = {"dtype": str(scores.dtype).removeprefix("torch."), "mode": mode, "anchor": anchor}
    done = "pass" if check else "ran (not checked)"
    phase = "warm-up"
    try:
        loss_fn().backward()  # outside the check: lazy initialisations are not the loss's doing
        x.grad = None
        phase = "forward"
        with sync_errors(check):
            loss = loss_fn()
        row["forward"], phase = done, "backward"
        with sync_errors(check):
            loss.backward()
        row["backward"] = done
        row["finite"] = bool(torch.isfinite(loss.detach()).all()) and bool(torch.isfinite(x.grad).all())
    except Exception as err:  # noqa: BLE001 - recorded per case, the other cases still run
        row[phase] = f"fail: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    return row


def section_syncs(args: argparse.Namespace) -> dict:
    check = args.device.startswith("cuda")
    scores, t, v, _, _ = loss_batch(max(args.regions), args)
    rows = [sync_case(scores.to(dtype), t, v, mode, anchor, check) for dtype in SYNC_DTYPES for mode, anchor in CASES]
    failures = sum(r.get("forward") != "pass" or r.get("backward") != "pass" for r in rows) if check else None
    return {"checked": check, "status": "checked" if check else "skipped: needs CUDA", "regions": max(args.regions),
            "cases": rows, "failures": failures, "all_ran": all(r.get("finite", False) for r in rows)}


# ----------------------------------------------------------------- 3. training steps


def section_train(args: argparse.Namespace) -> dict:
    sizes = {key: getattr(args, key) for key in SIZES}
    out = {"model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads}, "sizes": sizes,
           "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "precisions": {}}
    with tempfile.TemporaryDirectory() as root:
        plugin = synthetic_plugin(root, model_config(args.hidden, args.layers, args.heads), images=args.images,
                                  captions_per_image=args.captions_per_image)
        for i, precision in enumerate(args.precisions):
            runs = compare(plugin, root, iais="singular", rounds=args.rounds, first=("none", "iais")[i % 2],
                           steps=args.steps, warmup=args.warmup, precision=precision, device=args.device,
                           sizes=sizes)
            out["precisions"][precision] = summary = summarise(runs, sizes)
            print(f"train: {precision}: IAIS overhead {100 * (summary['overhead_ratio'] - 1):+.1f}%", file=sys.stderr)
    return out


# ----------------------------------------------------------------- 4. full-ranking evaluation


def section_eval(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = UniterForRetrieval(model_config(args.hidden, args.layers, args.heads)).to(args.device).eval()
    with tempfile.TemporaryDirectory() as root:
        _, _, pairs = synthetic_split(root, images=args.eval_images, captions_per_image=args.captions_per_image)
        try:
            result = timed_scores(model, pairs, batch_size=args.eval_batch_size, amp=AMP_DTYPES["bf16"])
            tokens = statistics.mean(pairs.caption_length(c) for c in range(pairs.n_captions))
            regions = statistics.mean(pairs.image(i).features.shape[0] for i in range(pairs.n_images))
        finally:
            pairs.close()
    n_pairs = result.scores.numel()
    rate = n_pairs / result.seconds
    return {"model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads}, "precision": "bf16",
            "batch_size": args.eval_batch_size, "pairs": n_pairs, "seconds": result.seconds,
            "pairs_per_s": rate, "mean_tokens": tokens, "mean_regions": regions,
            "projected_s": {name: n / rate for name, n in RANKINGS.items()}}


# ----------------------------------------------------------------- 5. torchrun and resume


def finetune(args: argparse.Namespace, cli: list[str]) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone ... -m integrations.uniter.finetune <cli>``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.torchrun_procs}",
           "-m", "integrations.uniter.finetune", *cli]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    return proc


def read_steps(out_dir: str) -> list[dict]:
    path = os.path.join(out_dir, "log", "train_log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def section_torchrun(args: argparse.Namespace) -> dict:
    first, total = args.torchrun_steps
    with tempfile.TemporaryDirectory() as root:
        dbs = make_retrieval_dbs(root, n_images=12, captions_per_image=3, seed=1)
        config = os.path.join(root, "model.json")
        with open(config, "w", encoding="utf-8") as handle:
            json.dump(TORCHRUN_MODEL, handle)
        out_dir = os.path.join(root, "run")
        cli = ["--txt-db", dbs.txt_db, "--img-db", dbs.img_db, "--model-config", config, "--output-dir", out_dir,
               "--train-batch-size", "1", "--negative-size", "7", "--hard-neg-size", "3", "--inf-minibatch-size",
               "8", "--warmup-steps", "1", "--valid-steps", "1000", "--n-workers", "1", "--iais", "singular",
               "--no-progress", "--no-tensorboard", "--quiet"]
        runs = [finetune(args, cli + ["--num-train-steps", str(first), "--save-steps", str(max(1, first - 1))])]
        log1 = read_steps(out_dir)
        runs.append(finetune(args, cli + ["--num-train-steps", str(total), "--resume", "auto"]))
        log2 = read_steps(out_dir)
        hps_path = os.path.join(out_dir, "log", "hps.json")
        hps = read_json_object(hps_path) if os.path.exists(hps_path) else {}
    found = re.search(r"resumed from \S+ at step (\d+)", runs[1].stderr)
    device, backend = str(hps.get("device", "")), hps.get("process_group") or "none"
    return {"procs": args.torchrun_procs, "backend": backend, "precision": hps.get("precision"), "device": device,
            "exit_codes": [r.returncode for r in runs], "steps_first": [r["step"] for r in log1],
            "steps_after_resume": [r["step"] for r in log2], "resumed_step": int(found.group(1)) if found else None,
            "log_kept": log2[:len(log1)] == log1 and len(log1) > 0,
            "resume_ok": (found is not None and int(found.group(1)) == first and log2[:len(log1)] == log1
                          and [r["step"] for r in log2] == list(range(1, total + 1))),
            "stderr_tail": [r.stderr[-1500:] for r in runs if r.returncode != 0]}


# ----------------------------------------------------------------- targets and outputs


def environment(args: argparse.Namespace) -> dict:
    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "smoke": args.smoke,
            "command": " ".join(["python", "bench/gpu_check.py", *sys.argv[1:]]),
            "device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
            "python": platform.python_version()}


def targets(results: dict) -> list[dict]:
    """The goals, each with the measurement and met (True/False) or None when not measured."""
    rows = []
    loss, syncs, train, ev = (results.get(k, {}) for k in ("loss", "syncs", "train", "eval"))
    if "min_loop_over_best" in loss:
        x = loss["min_loop_over_best"]
        rows.append({"goal": "loss vs per-sample loop >= 30x", "measured": f"{x:.1f}x (slowest case)", "met": x >= 30})
    if "cases" in syncs:
        rows.append({"goal": "0 host syncs", "met": syncs["failures"] == 0 if syncs["checked"] else None,
                     "measured": f"{syncs['failures']} failing of {len(syncs['cases'])}" if syncs["checked"]
                     else syncs["status"]})
    for precision, s in train.get("precisions", {}).items():
        pct = 100 * (s["overhead_ratio"] - 1)
        rows.append({"goal": f"IAIS overhead <= 2% of a step ({precision})", "measured": f"{pct:+.1f}%",
                     "met": pct <= 2})
    if "projected_s" in ev:
        minutes = ev["projected_s"]["Flickr30k 1K x 5K"] / 60
        rows.append({"goal": "Flickr30k 1K x 5K <= 10 min", "measured": f"{minutes:.1f} min", "met": minutes <= 10})
    return rows


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def md_loss(sec: dict) -> list[str]:
    shape = sec["shape"]
    rows = [[r["regions"], r["mode"], r["anchor"], f"{r['loop_ms']:.2f}", f"{r['vector_ms']:.2f}",
             f"{r['compiled_ms']:.2f}" if "compiled_ms" in r else ("failed" if "compile_error" in r else "-"), f"{r['loop_over_vector']:.1f}x",
             f"{r['loop_over_compiled']:.1f}x" if "compiled_ms" in r else "-",
             f"{r['compile_s']:.1f}" if "compile_s" in r else "-",
             "yes" if r["agree"] and r.get("compiled_agree", True) else f"NO ({r['max_abs_diff']:.1e})"]
            for r in sec["cases"]]
    errors = sorted({f"torch.compile failed: {r['compile_error']}" for r in sec["cases"] if "compile_error" in r})
    return [f"Loss forward+backward, {shape['samples']} pairs x {shape['heads']} heads, text padded to "
            f"{shape['text_padded']}, median of {sec['repeats']}; vector = iaisreg.torch.iais with the masks:", ""] + \
        _table(["regions", "mode", "anchor", "loop ms", "vector ms", "compiled ms", "loop / vector",
                "loop / compiled", "compile s", "losses agree"], rows) + ([""] + errors if errors else [])


def md_syncs(sec: dict) -> list[str]:
    rows = [[r["dtype"], r["mode"], r["anchor"], r.get("forward", "-"), r.get("backward", "-")] for r in sec["cases"]]
    return [f"Host synchronisations of forward and backward ({sec['regions']} regions), "
            f"`torch.cuda.set_sync_debug_mode(\"error\")`: {sec['status']}", ""] + \
        _table(["scores", "mode", "anchor", "forward", "backward"], rows)


def md_train(sec: dict) -> list[str]:
    m, z = sec["model"], sec["sizes"]
    rows = []
    for precision, s in sec["precisions"].items():
        for kind, k in s["kinds"].items():
            peak = f"{k['peak_bytes'] / 2 ** 30:.2f}" if k["peak_bytes"] is not None else "-"
            overhead = "" if kind == "none" else (f"{100 * (s['overhead_ratio'] - 1):+.1f}% "
                                                  f"({100 * (s['overhead_min'] - 1):+.1f} .. "
                                                  f"{100 * (s['overhead_max'] - 1):+.1f})")
            rows.append([precision, kind, f"{1e3 * k['median_step_s']:.1f}", f"{k['groups_per_s']:.1f}",
                         f"{k['pairs_per_s']:.0f}", peak, overhead])
    return [f"Training steps of the engine with the UNITER plug-in: hidden {m['hidden']}, {m['layers']} layers, "
            f"{m['heads']} heads (random weights); {z['train_batch_size']} micro-steps x 2 groups per step, "
            f"{z['negative_size']} scored -> {z['hard_neg_size']} hard negatives, mining in chunks of "
            f"{z['inf_minibatch_size']}; {sec['rounds']} rounds of {sec['steps'] - sec['warmup']} timed steps per "
            "kind, order alternating; overhead = median (min .. max) of per-round ratios:", ""] + \
        _table(["precision", "IAIS", "ms/step", "groups/s", "pairs/s", "peak GiB", "IAIS overhead"], rows)


def md_eval(sec: dict) -> list[str]:
    proj = [f"{sec['projected_s'][name] / 60:.1f} min" for name in RANKINGS]
    m = sec["model"]
    return [f"Full-ranking scoring (`score_matrix`): hidden {m['hidden']}, {m['layers']} layers, {m['heads']} heads, "
            f"{sec['precision']} autocast, batch {sec['batch_size']}; synthetic captions of "
            f"{sec['mean_tokens']:.1f} tokens and images of {sec['mean_regions']:.1f} regions on average:", ""] + \
        _table(["pairs", "seconds", "pairs/s", *(f"{name} (projected)" for name in RANKINGS)],
               [[sec["pairs"], f"{sec['seconds']:.2f}", f"{sec['pairs_per_s']:.0f}", *proj]])


def md_torchrun(sec: dict) -> list[str]:
    return ["`torch.distributed.run --standalone -m integrations.uniter.finetune --iais singular`, then `--resume "
            "auto` with more steps:", ""] + \
        _table(["processes", "process group", "precision", "exit codes", "steps", "resumed at step",
                "steps after resume", "resume ok"],
               [[sec["procs"], sec["backend"], sec["precision"], ", ".join(map(str, sec["exit_codes"])),
                 sec["steps_first"], sec["resumed_step"], sec["steps_after_resume"], sec["resume_ok"]]])


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"## GPU check: {env['device']}", "",
             f"`{env['command']}`, {env['date']}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
             f"NCCL {env['nccl']}, Python {env['python']}.", ""]
    if env["smoke"]:
        lines += ["**Smoke run on the CPU at toy sizes: these figures only show that the code runs.**", ""]
    render = {"loss": md_loss, "syncs": md_syncs, "train": md_train, "eval": md_eval, "torchrun": md_torchrun}
    for name, fn in render.items():
        if name in results:
            sec = results[name]
            lines += (["**" + name + "**: " + sec["error"]] if "error" in sec else fn(sec)) + [""]
    mark = {True: "met", False: "**not met**", None: "not measured"}
    lines += _table(["goal", "measured", ""], [[t["goal"], t["measured"], mark[t["met"]]] for t in results["targets"]])
    walls = ", ".join(f"{name} {results[name]['wall_s']:.0f} s" for name in SECTIONS if name in results)
    return "\n".join(lines + ["", f"Wall time: {walls}; in all {results['wall_s']:.0f} s."]) + "\n"


def write_outputs(results: dict, out: str) -> str:
    results["targets"] = targets(results)
    text = markdown(results)
    with open(os.path.join(out, "gpu_check.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    with open(os.path.join(out, "gpu_check.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.smoke and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        print(f"error: no CUDA device ({args.device!r}, torch {torch.__version__}): run on a GPU, or pass --smoke for "
              "the CPU smoke run", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
    logging.getLogger("integrations.uniter").setLevel(logging.ERROR)  # "no pre-trained checkpoint"
    os.makedirs(args.out, exist_ok=True)
    results, failed, started = {"environment": environment(args)}, [], time.perf_counter()
    for name in [s for s in SECTIONS if s in args.sections.split(",")]:
        t0 = time.perf_counter()
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            results[name] = globals()[f"section_{name}"](args)
        except Exception as err:  # noqa: BLE001 - one section's failure keeps the others' figures
            traceback.print_exc()
            results[name] = {"error": f"{type(err).__name__}: {err}"}
            failed.append(name)
        results[name]["wall_s"] = time.perf_counter() - t0
        results["wall_s"] = time.perf_counter() - started
        text = write_outputs(results, args.out)
    print(text)
    if failed:
        print(f"error: section(s) {', '.join(failed)} failed (see gpu_check.json)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
