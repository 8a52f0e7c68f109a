"""Forward+backward time of the vectorised IAIS loss vs the per-sample loop
(tests/reference_loop.py, the structure of the authors' code), at the
paper's shapes: 8 positive pairs, 12 heads, text up to 62 tokens (with
[CLS]/[SEP]), 36 or 100 regions; float32 on CPU (or --device cuda).

    python bench/loss.py [--device cpu|cuda] [--threads 1] [--repeats 30] [--json out.json]
    python bench/loss.py --threads 1 --baseline main     # also the loss as it was at a git revision

Every variant runs once per round, in an order that rotates from round to
round, so none always runs first or on a warmer cache; the median of the
rounds is reported with the spread (25th-75th percentile). ``--clock cpu``
times the process's CPU time instead of the wall clock (steadier on a shared
machine). All losses are checked to agree first.

``--device-path`` adds ``vector (device path)``: the same call, made to
take the path it takes on a GPU or under ``torch.compile``/``jax.jit``,
where no value is read on the host (every block at full width, selected with
``where``).

``--baseline REV`` imports the core ``iaisreg`` package as it was at git
revision REV (under another name, in this process) and times it with the
masks (``REV masks``) and, if it had them, with the static column spans of
the layout (``REV spans``: ``text_span=(1, 61)``, ``image_span=(62, N)``).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import iaisreg.torch as it  # noqa: E402
from reference_loop import reference_iais  # noqa: E402

MAX_TL = 62


def make_batch(n_regions: int, device: str, seed: int = 0):
    """Scores ``(8, 12, N, N)``, text/image masks ``(8, N)`` in the authors'
    layout (text padded to 62 positions before the regions), and the same
    items as per-sample position lists."""
    g = torch.Generator().manual_seed(seed)
    b, h = 8, 12
    txt_lens = torch.randint(12, MAX_TL + 1, (b,), generator=g)
    txt_lens[0] = MAX_TL
    nbb = torch.randint(max(10, n_regions // 2), n_regions + 1, (b,), generator=g)
    nbb[0] = n_regions
    n = MAX_TL + n_regions
    scores = torch.randn(b, h, n, n, generator=g) * 2.0
    t, v = it.masks_from_lengths(n, txt_lens - 2, nbb, text_start=1, image_start=MAX_TL)
    text = [list(range(1, int(tl) - 1)) for tl in txt_lens]
    image = [list(range(MAX_TL, MAX_TL + int(k))) for k in nbb]
    return scores.to(device), t.to(device), v.to(device), text, image


def timeit(fn, repeats: int, device: str) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs (after 3 warm-up runs)."""
    return statistics.median(time_rounds({"fn": fn}, repeats, device)["fn"]["wall"])


def time_rounds(fns: dict, repeats: int, device: str) -> dict:
    """``{name: {"wall": [...], "cpu": [...]}}`` seconds: 3 warm-up rounds,
    then ``repeats`` rounds running every function once, the order rotating."""
    names = list(fns)
    out = {k: {"wall": [], "cpu": []} for k in names}
    for r in range(3 + repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            if device == "cuda":
                torch.cuda.synchronize()
            w, c = time.perf_counter(), time.thread_time()
            fns[k]()
            if device == "cuda":
                torch.cuda.synchronize()
            if r >= 3:
                out[k]["wall"].append(time.perf_counter() - w)
                out[k]["cpu"].append(time.thread_time() - c)
    return out


def core_at(rev: str):
    """The core package ``iaisreg`` (its top-level modules) as it was at git
    revision ``rev``, imported as ``iaisreg_<sha>``."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    name = f"iaisreg_{sha}"
    folder = Path(tempfile.mkdtemp()) / name
    folder.mkdir()
    listing = subprocess.run(["git", "ls-tree", "--name-only", rev, "iaisreg/"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for path in listing:
        if path.endswith(".py"):
            text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout
            (folder / Path(path).name).write_text(text)
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module(name)


def device_path(fn):
    """``fn`` run as on a device or under a tracer: the core reads nothing from
    the values (no item ranges, no finiteness check)."""
    import iaisreg._blocks as blocks
    import iaisreg._loss as loss

    def run(x):
        saved = loss.item_ranges, blocks._host_finite
        loss.item_ranges, blocks._host_finite = (lambda *a, **k: None), (lambda *a: False)
        try:
            return fn(x)
        finally:
            loss.item_ranges, blocks._host_finite = saved

    return run


def variants(scores, t, v, text, image, mode: str, anchor: str, base, device_column: bool) -> dict:
    """``{name: loss function of the scores}`` for one configuration."""
    n = scores.shape[-1]
    fns = {
        "loop": lambda x: reference_iais(x, text, image, mode=mode, anchor=anchor),
        "sliced": lambda x: reference_iais(x, text, image, mode=mode, anchor=anchor, blocks="sliced"),
        "vector": lambda x: it.iais(x, text_mask=t, image_mask=v, mode=mode, anchor=anchor),
    }
    if device_column:
        fns["vector (device path)"] = device_path(fns["vector"])
    if base is not None:
        from array_api_compat import torch as xp

        tag = base.__name__.split("_", 1)[1]
        fns[f"{tag} masks"] = lambda x: base.iais(x, text_mask=t, image_mask=v, mode=mode, anchor=anchor, xp=xp)
        if "text_span" in inspect.signature(base.iais).parameters:
            spans = dict(text_span=(1, MAX_TL - 1), image_span=(MAX_TL, n))
            fns[f"{tag} spans"] = lambda x: base.iais(x, text_mask=t, image_mask=v, mode=mode, anchor=anchor,
                                                      xp=xp, **spans)
    return fns


def measure(fns: dict, scores, repeats: int, device: str) -> dict:
    """Check that every loss agrees with the loop's, then time forward+backward."""
    want = fns["loop"](scores)
    for name, fn in fns.items():
        torch.testing.assert_close(fn(scores), want, rtol=1e-4, atol=1e-6, msg=lambda m, k=name: f"{k}: {m}")
    leaves = {k: scores.clone().requires_grad_(True) for k in fns}

    def step(k):
        def run():
            leaves[k].grad = None
            fns[k](leaves[k]).backward()
        return run

    return time_rounds({k: step(k) for k in fns}, repeats, device)


def summary(seconds: list) -> dict:
    q = statistics.quantiles(seconds, n=4)
    return {"median_ms": 1e3 * statistics.median(seconds), "q1_ms": 1e3 * q[0], "q3_ms": 1e3 * q[2]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what the table shows")
    ap.add_argument("--baseline", default=None, metavar="REV", help="also time the core at this git revision")
    ap.add_argument("--regions", default="36,100", help="comma-separated region counts")
    ap.add_argument("--device-path", action="store_true", help="also time the path taken on a GPU or when traced")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = core_at(args.baseline) if args.baseline else None
    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, {args.clock} clock, median of {args.repeats} "
          f"rounds [25th-75th percentile], ms")
    print("loop: the authors' structure (four batch-wide masked block softmaxes, then a per-sample loop); "
          "sliced: a leaner loop softmaxing each sample's compact blocks; vector: iaisreg.torch.iais with the masks")
    rows, header = [], None
    for n_regions in map(int, args.regions.split(",")):
        scores, t, v, text, image = make_batch(n_regions, args.device)
        for mode in ("singular", "distributed"):
            for anchor in ("V", "L"):
                fns = variants(scores, t, v, text, image, mode, anchor, base, args.device_path)
                times = measure(fns, scores, args.repeats, args.device)
                row = {"regions": n_regions, "mode": mode, "anchor": anchor,
                       **{k: {c: summary(x[c]) for c in ("wall", "cpu")} for k, x in times.items()}}
                rows.append(row)
                if header is None:
                    header = list(fns)
                    print(f"{'regions':>7} {'mode':>11} {'anchor':>6} " + " ".join(f"{k:>20}" for k in header)
                          + f" {'loop/vector':>11}")
                cells = [row[k][args.clock] for k in header]
                print(f"{n_regions:>7} {mode:>11} {anchor:>6} " + " ".join(
                    f"{c['median_ms']:7.2f} [{c['q1_ms']:5.1f}-{c['q3_ms']:5.1f}]" for c in cells)
                    + f" {row['loop'][args.clock]['median_ms'] / row['vector'][args.clock]['median_ms']:10.1f}x")
    if args.json:
        meta = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
                "repeats": args.repeats, "baseline": args.baseline, "argv": sys.argv[1:],
                "date": time.strftime("%Y-%m-%d")}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
