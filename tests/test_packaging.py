"""The built wheel: only the ``iaisreg`` top-level package, and it works
installed, outside the source tree."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, env={**env, "TMPDIR": str(build)},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    wheels = list(out.glob("iaisreg-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_has_only_iaisreg(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"iaisreg"}, top
    assert "iaisreg/py.typed" in names
    assert "iaisreg/torch/__init__.py" in names and "iaisreg/jax/__init__.py" in names and "iaisreg/tf/__init__.py" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    assert sorted(r.split()[1].split(">")[0].split("=")[0] for r in requires) == ["array-api-compat", "numpy"]


def test_installed_wheel_works_outside_source_tree(wheel, tmp_path):
    target = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    code = (
        "import iaisreg, iaisreg.torch, torch, sys\n"
        "assert iaisreg.__file__.startswith(sys.argv[1]), iaisreg.__file__\n"
        "s = torch.randn(2, 4, 9, 9, requires_grad=True)\n"
        "loss = iaisreg.torch.iais(s, 4, mode='singular'); loss.backward()\n"
        "print('ok', float(loss))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    res = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("ok")
