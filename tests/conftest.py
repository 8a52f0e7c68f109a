from __future__ import annotations

import fcntl
import os
import struct
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

import iaisreg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

settings.register_profile(
    "ci", max_examples=60, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def random_layout(rng: np.random.Generator, n: int, *, min_text: int = 1, min_image: int = 1):
    """Random per-position role: 0 text, 1 image, 2 padding, anywhere (padding in the middle)."""
    while True:
        roles = rng.choice(3, size=n, p=[0.35, 0.45, 0.2])
        if (roles == 0).sum() >= min_text and (roles == 1).sum() >= min_image:
            return roles


def layouts_to_positions(roles: np.ndarray):
    text = [list(map(int, np.flatnonzero(r == 0))) for r in roles]
    image = [list(map(int, np.flatnonzero(r == 1))) for r in roles]
    return text, image


#: the allowed values of the options that change the math, and every (mode, anchor, variant)
MODES, ANCHORS, VARIANTS = (iaisreg.OPTIONS[k].choices for k in ("mode", "anchor", "variant"))
COMBOS = [(m, a, v) for m in MODES for a in ANCHORS for v in VARIANTS]


def scores_and_roles(seed: int = 0, b: int = 3, h: int = 2, n: int = 8):
    """Random float64 scores ``(b, h, n, n)`` and per-sample roles ``(b, n)``
    (0 text, 1 image, 2 padding): three of each item and two padding
    positions in a random order (``n <= 8``)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(scale=2.0, size=(b, h, n, n))
    roles = np.stack([rng.permutation([0, 0, 0, 1, 1, 1, 2, 2][:n]) for _ in range(b)])
    return s, roles


def option_defaults(*, without: tuple = ()) -> dict:
    """``{name: default}`` of ``iaisreg.OPTIONS``, less the names in ``without``."""
    return {name: o.default for name, o in iaisreg.OPTIONS.items() if name not in without}


def signature_defaults(fn, names) -> dict:
    """``{name: default}`` of the parameters ``names`` as ``inspect.signature(fn)`` (and ``help()``) shows them."""
    import inspect

    params = inspect.signature(fn).parameters
    return {name: params[name].default for name in names}


def png_size(path) -> tuple[int, int]:
    """``(width, height)`` of a PNG file; fails when ``path`` is not one."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG file"
    return struct.unpack(">II", data[16:24])


def once_per_session(tmp_path_factory, name: str, make) -> Path:
    """The folder ``name`` filled by ``make(folder)`` once per test session.

    pytest-xdist workers share it: the first to ask runs ``make``, the others
    wait for it and read what it wrote. A failed ``make`` leaves no marker, so
    every worker that asks sees the failure itself.
    """
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # pytest-N/popen-gwK: pytest-N belongs to this session, common to its workers
    folder, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            folder.mkdir(exist_ok=True)
            make(folder)
            done.touch()
    return folder
