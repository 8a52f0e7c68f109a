"""draw_object_attention: a readable PNG, one row per checkpoint."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from integrations.retrieval.plotting import draw_object_attention  # noqa: E402

from .builders import REPO_ROOT  # noqa: E402

NAMES = ["A girl", "brown hair", "the edge of a cement area", "overlooking water"]


def _rows(rng, *shape):
    x = rng.random(shape)
    return x / x.sum(-1, keepdims=True)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_two_checkpoints(tmp_path):
    rng = np.random.default_rng(0)
    out = draw_object_attention(
        _rows(rng, 2, 4, 4),
        _rows(rng, 2, 4, 4),
        NAMES,
        titles=["without IAIS", "with IAIS"],
        path=tmp_path / "figs" / "fig7.png",
    )
    assert out == tmp_path / "figs" / "fig7.png" and out.is_file()
    assert out.stat().st_size > 20_000
    w, h = _png_size(out)
    assert 800 <= w <= 4000 and 800 <= h <= 4000
    assert h > 0.6 * w  # two rows of panels: taller than a single row


def test_single_matrix_pair_and_many_long_names(tmp_path):
    rng = np.random.default_rng(1)
    k = 14
    names = [f"a Texas A&M football player number {i}" for i in range(k)]  # long, same prefix
    out = draw_object_attention(_rows(rng, k, k), _rows(rng, k, k), names, titles="UNITER", path=tmp_path / "a.png")
    w, h = _png_size(out)
    assert 1000 <= w <= 6000 and 500 <= h <= 4000 and w > h  # one row, two panels side by side
    out = draw_object_attention(np.eye(1), np.eye(1), ["a dog"], path=str(tmp_path / "one.png"), annotate=True)
    assert _png_size(out)[0] > 100


def test_torch_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.softmax(torch.randn(3, 3, requires_grad=True), -1)
    out = draw_object_attention(t, t.detach().to(torch.float16), NAMES[:3], path=tmp_path / "t.png")
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_matrix=np.ones((2, 2))), "must have the same shape"),
        (dict(text_matrix=np.ones((3, 4)), image_matrix=np.ones((3, 4))), r"'text_matrix' must have shape \(K, K\)"),
        (dict(text_matrix=np.full((3, 3), np.nan)), "finite"),
        (dict(object_names=["a", "b"]), "'object_names' must hold K=3 names"),
        (dict(titles=["without IAIS", "with IAIS"]), r"'titles' must hold one title per checkpoint \(C=1\); got 2"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    args = dict(text_matrix=np.ones((3, 3)), image_matrix=np.ones((3, 3)), object_names=["a", "b", "c"])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        draw_object_attention(**args, path=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_pyplot_is_not_imported(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from integrations.retrieval.plotting import draw_object_attention\n"
        f"draw_object_attention(np.eye(2), np.eye(2), ['a', 'b'], path={str(tmp_path / 'p.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)
