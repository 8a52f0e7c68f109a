"""Run the ```python code blocks of the framework guides, in order, one
namespace per page (a page's later blocks may use what earlier ones defined).
A page is skipped only when its framework is not in IAISREG_BACKENDS."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from backends import requested

DOCS = Path(__file__).resolve().parents[1] / "docs"
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
