"""``python -m iaisreg``: a short demo of the loss on random attention scores."""
from __future__ import annotations

import numpy as np

import iaisreg


def main() -> None:
    rng = np.random.default_rng(0)
    b, h, n_txt, n_img = 4, 12, 12, 36
    n = n_txt + n_img
    scores = rng.normal(scale=2.0, size=(b, h, n, n))
    print(f"iaisreg {iaisreg.__version__}: IAIS on random scores, batch {b}, {h} heads, "
          f"{n_txt} text + {n_img} image items")
    for mode in iaisreg.OPTIONS["mode"].choices:
        for variant in iaisreg.OPTIONS["variant"].choices:
            row = []
            for anchor in ("V", "L"):
                loss = iaisreg.iais(scores, n_txt, mode=mode, anchor=anchor, variant=variant)
                row.append(f"anchor {anchor}: {float(loss):9.5f}")
            print(f"  {mode:11s} {variant:8s}  " + "   ".join(row))
    sched = iaisreg.exp_schedule(5000)
    print("  lambda_t (exp, gamma=5) at steps 0/2500/5000: "
          + " / ".join(f"{sched(t):.4f}" for t in (0, 2500, 5000)))


if __name__ == "__main__":
    main()
