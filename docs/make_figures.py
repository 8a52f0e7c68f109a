"""Make the pictures of the documentation site (``docs/img/*.png``) again.

    python docs/make_figures.py              # all of them (the demo part takes a few minutes on 2 cores)
    python docs/make_figures.py --no-demo    # only the picture computed with the library

- ``iais_blocks.png``: what IAIS computes, on a hand-made attention matrix of
  one layer (five text items, three image items): the block softmax (Eq. 6),
  the image self-attention ``P_VV`` and the singular mirror target built from
  the text side (Eq. 10). The loss in the title is ``iaisreg.iais`` on the
  same scores, and the script checks that it equals ``iaisreg.m_kl`` of the
  two matrices drawn.
- ``demo_object_attention.png`` and ``demo_training_curves.png``: the two
  pictures of the built-in demo (``python -m integrations.uniter.demo``), at
  ``--steps 300`` (the default is 600), made smaller (256 colours).

Run it from the repository root with the project's environment
(``.venv/bin/python docs/make_figures.py``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import iaisreg  # noqa: E402
from integrations.retrieval.plotting import save_png  # noqa: E402

IMG = ROOT / "docs" / "img"
TEXT = ["red", "cube", "left of", "blue", "ball"]
IMAGE = ["cube region", "ball region", "background"]


def example_scores() -> np.ndarray:
    """Scores ``(N, N)`` of one head: text items first, then image items. The text side relates the colours to
    their shapes and the two shapes to each other; the image side attends elsewhere."""
    s = np.zeros((8, 8))
    s[:5, :5] = [[1, 3, 0, 0, 0], [0, 1, 1, 0, 2.5], [0, 1.5, 1, 0, 1.5], [0, 0, 0, 1, 3], [0, 2.5, 1, 0, 1]]
    s[5:, :5] = [[0, 4, 0, 0, 0], [0, 0, 0, 0, 4], [0, 0, 1, 0, 0]]  # each region -> its word
    s[:5, 5:] = [[1, 0, 0], [3, 0, 0], [1, 1, 0], [0, 1, 0], [0, 3, 0]]
    s[5:, 5:] = [[0, 0, 2], [1, 2, 0], [1, 0, 1]]
    return s


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def iais_pictures(path: Path) -> Path:
    """``iais_blocks.png`` (see the module docstring)."""
    from matplotlib.figure import Figure

    s, t = example_scores(), len(TEXT)
    blocks = np.block([[softmax(s[:t, :t]), softmax(s[:t, t:])], [softmax(s[t:, :t]), softmax(s[t:, t:])]])
    p_vv = blocks[t:, t:]
    star = s[t:, :t].argmax(-1)                    # each region's most attended text item
    target = softmax(s[:t, :t][np.ix_(star, star)])  # the mirror S_V^(s), then the row softmax
    loss = float(iaisreg.iais(s[None], t, mode="singular", anchor="V", variant="paper"))
    assert np.isclose(loss, float(iaisreg.m_kl(p_vv, target))), "the picture and the library disagree"

    fig = Figure(figsize=(9.6, 3.7), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[3.4, 2.9, 2.9])
    _heatmap(axes[0], blocks, TEXT + IMAGE, "block softmax of one layer (Eq. 6)", annotate=False)
    axes[0].axhline(t - 0.5, color="white", linewidth=2)
    axes[0].axvline(t - 0.5, color="white", linewidth=2)
    for (r, c), name in {(0, 0): "$P_{LL}$", (0, 1): "$P_{LV}$", (1, 0): "$P_{VL}$", (1, 1): "$P_{VV}$"}.items():
        axes[0].text((t - 1) / 2 if c == 0 else t + 1, (t - 1) / 2 if r == 0 else t + 1, name, color="white",
                     ha="center", va="center", fontsize=12, bbox=dict(facecolor="black", alpha=0.45, linewidth=0))
    _heatmap(axes[1], p_vv, IMAGE, "image self-attention $P_{VV}$", annotate=True)
    _heatmap(axes[2], target, IMAGE, "mirror from the text side\n$\\sigma(S_V^{(s)})$ (Eq. 10)", annotate=True)
    fig.suptitle(f"IAIS pulls $P_{{VV}}$ towards the mirror: m-KL = {loss:.2f} "
                 f"(Eq. 11; iaisreg.iais(scores, 5, mode=\"singular\", anchor=\"V\", variant=\"paper\"))", fontsize=10)
    return save_png(fig, path, dpi=90)


def _heatmap(ax, data: np.ndarray, labels: list, title: str, *, annotate: bool) -> None:
    ax.imshow(data, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    if annotate:
        for (i, j), v in np.ndenumerate(data):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="black" if v > 0.5 else "white")


def demo_pictures(steps: int) -> list[Path]:
    """The demo's two pictures, from a run at ``steps`` steps in a temporary cache."""
    from integrations.uniter import demo

    with tempfile.TemporaryDirectory() as cache:
        if demo.main(["--steps", str(steps), "--cache-dir", cache, "--quiet"]) != 0:
            raise SystemExit("the demo failed")
        runs = Path(cache) / "runs"
        out = [IMG / "demo_object_attention.png", IMG / "demo_training_curves.png"]
        for source, target in zip((runs / "object_attention.png", runs / "training_curves.png"), out):
            shutil.copyfile(source, target)
    return out


def shrink(path: Path) -> None:
    """Store ``path`` with a 256-colour palette (a third of the size, the same look for these pictures)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256)
    small.save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-demo", action="store_true", help="skip the demo's pictures")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps of the demo runs")
    args = parser.parse_args(argv)
    IMG.mkdir(parents=True, exist_ok=True)
    made = [iais_pictures(IMG / "iais_blocks.png")]
    if not args.no_demo:
        made += demo_pictures(args.steps)
    for path in made:
        shrink(path)
        print(f"{os.path.relpath(path, ROOT)}: {path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
