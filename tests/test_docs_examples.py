"""Run the ```python code blocks of the framework guides, in order, one
namespace per page (a page's later blocks may use what earlier ones defined).
A page is skipped only when its framework is not in IAISREG_BACKENDS. Every
``iaisreg.…`` name the docs and the README mention exists."""
from __future__ import annotations

import importlib
import re

import pytest

from backends import requested
from conftest import ROOT

DOCS = ROOT / "docs"
PAGES = {"pytorch.md": "torch", "jax.md": "jax", "tensorflow.md": "tf"}
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in BLOCK.finditer(text)]


def test_block_extraction():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x + 1\n"]


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_examples_run(page, capsys):
    if PAGES[page] not in requested():
        pytest.skip(f"{PAGES[page]} not in IAISREG_BACKENDS")
    path = DOCS / page
    blocks = python_blocks(path.read_text())
    assert blocks, f"{page} has no python code block"
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{path}[block {i + 1}]", "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"{page}, python block {i + 1} failed: {type(exc).__name__}: {exc}") from exc
    assert "step" in capsys.readouterr().out  # the training loop printed its progress


NAME = re.compile(r"\biaisreg(?:\.[A-Za-z_]\w*)+")
ADAPTERS = {"torch": "torch", "jax": "jax", "tf": "tf"}


def named_objects() -> list[str]:
    texts = [p.read_text() for p in sorted(DOCS.glob("*.md"))] + [(ROOT / "README.md").read_text()]
    return sorted({m.group(0) for text in texts for m in NAME.finditer(text)})


@pytest.mark.parametrize("name", named_objects())
def test_named_objects_exist(name):
    parts = name.split(".")
    backend = ADAPTERS.get(parts[1])
    if backend is not None and backend not in requested():
        pytest.skip(f"{backend} not in IAISREG_BACKENDS")
    # the longest importable module prefix, then attributes
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        break
    for attr in parts[cut:]:
        assert hasattr(obj, attr), f"{name}: {'.'.join(parts[:cut])} has no {attr!r}"
        obj = getattr(obj, attr)
