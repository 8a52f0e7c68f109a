"""Forward+backward time of the vectorised IAIS loss vs the per-sample loop
(tests/reference_loop.py, the structure of the authors' code), at the
paper's shapes: 8 positive pairs, 12 heads, text up to 62 tokens (with
[CLS]/[SEP]), 36 or 100 regions; float32 on CPU (or --device cuda).

    python bench/loss.py [--device cpu|cuda] [--repeats 30] [--json out.json]

Both are measured side by side in one process; the median of the repeats is
reported, and the two losses are checked to agree first.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import iaisreg.torch as it  # noqa: E402
from reference_loop import reference_iais  # noqa: E402


def make_batch(n_regions: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, h, max_tl = 8, 12, 62
    txt_lens = torch.randint(12, max_tl + 1, (b,), generator=g)
    txt_lens[0] = max_tl
    nbb = torch.randint(max(10, n_regions // 2), n_regions + 1, (b,), generator=g)
    nbb[0] = n_regions
    n = max_tl + n_regions
    scores = torch.randn(b, h, n, n, generator=g) * 2.0
    t, v = it.masks_from_lengths(n, txt_lens - 2, nbb, text_start=1, image_start=max_tl)
    text = [list(range(1, int(tl) - 1)) for tl in txt_lens]
    image = [list(range(max_tl, max_tl + int(k))) for k in nbb]
    spans = dict(text_span=(1, max_tl - 1), image_span=(max_tl, n))
    return scores.to(device), t.to(device), v.to(device), text, image, spans


def timeit(fn, repeats: int, device: str) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print("loop: the authors' structure (four batch-wide masked block softmaxes, then a per-sample loop);")
    print("sliced: a leaner loop softmaxing each sample's compact blocks; vector: iaisreg.torch.iais with")
    print("the masks; +spans: also the static column spans of the layout (text_span/image_span)")
    print(f"{'regions':>7} {'mode':>11} {'anchor':>6} {'loop ms':>9} {'sliced ms':>9} {'vector ms':>9} "
          f"{'+spans ms':>9} {'loop/vec':>8} {'loop/+sp':>8} {'slc/vec':>8} {'slc/+sp':>8}")
    for n_regions in (36, 100):
        scores, t, v, text, image, spans = make_batch(n_regions, args.device)
        for mode in ("singular", "distributed"):
            for anchor in ("V", "L"):
                s_vec = scores.clone().requires_grad_(True)
                s_loop = scores.clone().requires_grad_(True)

                def vec():
                    s_vec.grad = None
                    it.iais(s_vec, text_mask=t, image_mask=v, mode=mode, anchor=anchor).backward()

                def vec_spans():
                    s_vec.grad = None
                    it.iais(s_vec, text_mask=t, image_mask=v, mode=mode, anchor=anchor, **spans).backward()

                def loop():
                    s_loop.grad = None
                    reference_iais(s_loop, text, image, mode=mode, anchor=anchor).backward()

                def sliced():
                    s_loop.grad = None
                    reference_iais(s_loop, text, image, mode=mode, anchor=anchor, blocks="sliced").backward()

                a = it.iais(scores, text_mask=t, image_mask=v, mode=mode, anchor=anchor)
                b = reference_iais(scores, text, image, mode=mode, anchor=anchor)
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
                c = it.iais(scores, text_mask=t, image_mask=v, mode=mode, anchor=anchor, **spans)
                torch.testing.assert_close(c, b, rtol=1e-4, atol=1e-6)
                t_loop = timeit(loop, args.repeats, args.device)
                t_sliced = timeit(sliced, args.repeats, args.device)
                t_vec = timeit(vec, args.repeats, args.device)
                t_span = timeit(vec_spans, args.repeats, args.device)
                rows.append(dict(regions=n_regions, mode=mode, anchor=anchor, loop_ms=t_loop * 1e3,
                                 sliced_loop_ms=t_sliced * 1e3, vector_ms=t_vec * 1e3, vector_spans_ms=t_span * 1e3,
                                 speedup=t_loop / t_vec, speedup_spans=t_loop / t_span,
                                 speedup_vs_sliced=t_sliced / t_vec, speedup_spans_vs_sliced=t_sliced / t_span))
                print(f"{n_regions:>7} {mode:>11} {anchor:>6} {t_loop * 1e3:9.2f} {t_sliced * 1e3:9.2f} "
                      f"{t_vec * 1e3:9.2f} {t_span * 1e3:9.2f} {t_loop / t_vec:7.1f}x {t_loop / t_span:7.1f}x "
                      f"{t_sliced / t_vec:7.1f}x {t_sliced / t_span:7.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
