"""Every docstring example of the ``iaisreg`` and ``integrations`` packages
runs and passes.

Modules are found on disk with :func:`pkgutil.iter_modules`, package by
package, without importing anything at collection (``pkgutil.walk_packages``
imports every package to recurse, which would load each framework into every
test process and drop a package that fails to import without a word). Every
module whose source contains a ``>>>`` example not marked
``# doctest: +SKIP`` is a test: it is imported (an import error fails it)
and run with :mod:`doctest`; it must run at least one example and fail none. A module that imports a framework at its top level
(``torch``, ``jax``, ``tensorflow``, ...) is skipped, with the reason, when
that framework is not in ``IAISREG_BACKENDS``.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

from backends import requested
from conftest import ROOT
PACKAGES = ("iaisreg", "integrations")
#: top-level module imported -> the backend it belongs to
FRAMEWORKS = {"torch": "torch", "transformers": "torch", "jax": "jax", "flax": "jax", "optax": "jax",
              "tensorflow": "tf", "keras": "tf"}
TOP_LEVEL_IMPORT = re.compile(r"^(?:import|from)\s+([A-Za-z_]\w*)", re.M)
EXAMPLE = re.compile(r"^\s*>>>(?!.*doctest:\s*\+SKIP)", re.M)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def package_modules(name: str, path: Path) -> list[tuple[str, Path]]:
    """``(dotted name, source file)`` of package ``name`` at ``path`` and of
    every module and package below it."""
    found = [(name, path / "__init__.py")]
    for info in pkgutil.iter_modules([str(path)]):
        if info.ispkg:
            found += package_modules(f"{name}.{info.name}", path / info.name)
        else:
            found.append((f"{name}.{info.name}", path / f"{info.name}.py"))
    return found


def modules_with_examples() -> list[tuple[str, Path]]:
    return [(name, src) for pkg in PACKAGES for name, src in package_modules(pkg, ROOT / pkg)
            if EXAMPLE.search(src.read_text())]


def frameworks_of(src: Path) -> set[str]:
    """The backends whose framework the module imports at its top level."""
    return {FRAMEWORKS[m] for m in TOP_LEVEL_IMPORT.findall(src.read_text()) if m in FRAMEWORKS}


MODULES = modules_with_examples()


def test_discovery_finds_every_package():
    names = {name for name, _ in MODULES}
    for expected in ("iaisreg._loss", "iaisreg.torch", "iaisreg.jax", "iaisreg.tf", "iaisreg.tf._keras",
                     "iaisreg.schedules", "integrations.uniter.model"):
        assert expected in names, expected
    assert frameworks_of(ROOT / "iaisreg" / "tf" / "_keras.py") == {"tf"}
    assert frameworks_of(ROOT / "iaisreg" / "_loss.py") == set()


@pytest.mark.parametrize("name,src", MODULES, ids=[name for name, _ in MODULES])
def test_docstring_examples(name, src):
    missing = sorted(frameworks_of(src) - set(requested()))
    if missing:
        pytest.skip(f"{name} imports {', '.join(missing)}, not in IAISREG_BACKENDS")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS)
    assert result.attempted > 0 and result.failed == 0, (name, result)
