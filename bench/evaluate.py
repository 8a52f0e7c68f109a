"""Benchmark of the full-ranking retrieval evaluation on synthetic databases.

Writes a random txt_db/img_db pair in the original formats (default 100 images x
5 captions = 500 captions, 50,000 pairs), scores every pair with a small random
UNITER, checks the recalls against a brute-force ranking and a sample of pairs
against one-by-one scoring, and prints the throughput in pairs/s.
``synthetic_split`` and ``timed_scores`` are also used by ``bench/gpu_check.py``.

    python bench/evaluate.py                       # CPU, small model
    python bench/evaluate.py --device cuda --precision fp16 --hidden 768 --layers 12 --heads 12
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from integrations.retrieval import compute_recalls, score_matrix  # noqa: E402
from integrations.uniter.config import UniterModelConfig  # noqa: E402
from integrations.uniter.data import ImgDb, TxtDb, collate  # noqa: E402
from integrations.uniter.data.synthetic import make_retrieval_dbs  # noqa: E402
from integrations.uniter.model import UniterForRetrieval  # noqa: E402
from integrations.uniter.plugin import UniterPairs  # noqa: E402


def brute_force_recalls(scores: np.ndarray, gt: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Recalls from full stable sorts (ties: lower index first), independent of compute_recalls."""
    n_txt, n_img = scores.shape
    ir_rank = np.array([np.where(np.argsort(-scores[t], kind="stable") == gt[t])[0][0] for t in range(n_txt)])
    best = np.full(n_img, n_txt)
    for j in range(n_img):
        ranking = np.argsort(-scores[:, j], kind="stable")
        positions = np.where(gt[ranking] == j)[0]
        if len(positions):
            best[j] = positions[0]
    out = {f"img_r{k}": float((ir_rank < k).mean()) for k in ks}
    out.update({f"txt_r{k}": float((best < k).mean()) for k in ks})
    return out


def synthetic_split(root: str, *, images: int, captions_per_image: int) -> tuple[TxtDb, ImgDb, UniterPairs]:
    """A random txt_db/img_db pair written under ``root``, opened as an evaluation split."""
    t0 = time.perf_counter()
    paths = make_retrieval_dbs(root, n_images=images, captions_per_image=captions_per_image, compressed=True, seed=0)
    txt_db, img_db = TxtDb(paths.txt_db), ImgDb(paths.img_db)
    print(f"wrote {len(txt_db)} captions x {len(img_db)} images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return txt_db, img_db, UniterPairs([(txt_db, img_db)], image_cache=0)


def timed_scores(model: torch.nn.Module, pairs: UniterPairs, *, batch_size: int, amp: torch.dtype | None):
    """``score_matrix`` of every pair, after one untimed pass (allocator, kernels)."""
    score_matrix(model, pairs, collate, batch_size=batch_size, amp_dtype=amp, progress=False)
    return score_matrix(model, pairs, collate, batch_size=batch_size, amp_dtype=amp, progress=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=400)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--check-pairs", type=int, default=50, help="pairs re-scored one by one")
    args = p.parse_args()

    torch.manual_seed(0)
    cfg = UniterModelConfig(hidden_size=args.hidden, num_hidden_layers=args.layers,
                            num_attention_heads=args.heads, intermediate_size=4 * args.hidden)
    model = UniterForRetrieval(cfg).to(args.device).eval()
    amp = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    with tempfile.TemporaryDirectory() as root:
        txt_db, img_db, pairs = synthetic_split(root, images=args.images, captions_per_image=args.captions_per_image)
        result = timed_scores(model, pairs, batch_size=args.batch_size, amp=amp)

        scores, gt = result.scores, result.gt
        metrics = compute_recalls(scores, gt)
        brute = brute_force_recalls(scores.numpy(), gt.numpy())
        for key, value in brute.items():
            assert abs(metrics[key] - value) < 1e-12, (key, metrics[key], value)
        rng = np.random.default_rng(0)
        worst = 0.0
        for t, j in zip(rng.integers(0, scores.shape[0], args.check_pairs),
                        rng.integers(0, scores.shape[1], args.check_pairs)):
            ids = txt_db.combine_inputs(txt_db.input_ids(result.txt_ids[t])).unsqueeze(0).to(args.device)
            feat, boxes = (x.unsqueeze(0).to(args.device) for x in img_db[result.img_fnames[j]])
            n = ids.shape[1] + feat.shape[1]
            with torch.no_grad(), torch.autocast(torch.device(args.device).type, dtype=amp, enabled=amp is not None):
                one = model(ids, torch.arange(ids.shape[1], device=args.device).unsqueeze(0), feat, boxes,
                            torch.ones(1, n, dtype=torch.long, device=args.device)).logits.float().item()
            worst = max(worst, abs(one - scores[t, j].item()))
        tol = 1e-4 if amp is None else 5e-2
        assert worst < tol, f"batched and one-by-one scores differ by {worst}"

    n_pairs = scores.numel()
    print(f"recalls match brute force; sampled pairs match one-by-one scoring (max |diff| {worst:.1e})")
    print(" ".join(f"{k}={metrics[k]:.3f}" for k in ("img_r1", "img_r5", "img_r10", "txt_r1", "txt_r5", "txt_r10")))
    print(f"{n_pairs} pairs in {result.seconds:.2f} s: {n_pairs / result.seconds:.0f} pairs/s "
          f"(hidden {args.hidden}, {args.layers} layers, batch {args.batch_size}, {args.device}, "
          f"{args.precision}, {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
