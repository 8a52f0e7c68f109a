"""The documentation site: ``mkdocs build --strict``, the API reference, the equations, the nav and the pictures.

The site is built once for this module, into a temporary directory, as
``make docs`` builds it. Strict mode turns every warning into a failure: a
broken link or picture, a page missing from the build, a docstring that
mkdocstrings cannot read. Then every public name of ``iaisreg``,
``iaisreg.torch``, ``iaisreg.jax`` and ``iaisreg.tf`` (each module's
``__all__``, imported) must appear in the API pages with its signature and
its docstring. An adapter whose framework is not in ``IAISREG_BACKENDS`` is
skipped (the build itself imports no framework).
"""
from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys

import pytest
import yaml

from backends import requested
from conftest import ROOT, once_per_session, png_size

#: module -> (API page, the backend its import needs)
API = {"iaisreg": ("core", None), "iaisreg.torch": ("torch", "torch"), "iaisreg.jax": ("jax", "jax"),
       "iaisreg.tf": ("tf", "tf")}
HEADING = re.compile(r'<h(\d) id="[^"]*" class="doc doc-heading">(.*?)</h\1>', re.S)


def text_of(fragment: str) -> str:
    """The visible text of an HTML fragment."""
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment))


def _build(out) -> None:
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out / "site")],
                          cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (out / "build.log").write_text(proc.stderr)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site and the build's log (one build per test session)."""
    out = once_per_session(tmp_path_factory, "docs_site", _build)
    return out / "site", (out / "build.log").read_text()


def test_the_strict_build_is_clean(site):
    _, log = site
    assert "WARNING" not in log and "ERROR" not in log, log


def api_sections(page: str) -> dict[str, str]:
    """Heading text (the documented name) -> its section of an API page: from the heading to the next heading
    of the same or a higher level."""
    page = page[page.index("<article"):page.index("</article>")]
    found = list(HEADING.finditer(page))
    sections = {}
    for i, match in enumerate(found):
        level = int(match[1])
        end = next((m.start() for m in found[i + 1:] if int(m[1]) <= level), len(page))
        name = text_of(re.sub(r"<small.*?</small>", "", match[2], flags=re.S)).replace("\u00b6", "").split()
        sections[name[0]] = page[match.start():end]
    return sections


def check_signature(label: str, obj, shown: str) -> None:
    """Every parameter of ``obj`` (a class: its constructor), as ``inspect`` reads it at run time, is in the
    signature shown (the options of ``iais`` included, which ``takes_options`` lists in ``__signature__``)."""
    missing = [name for name in inspect.signature(obj).parameters
               if name != "self" and not re.search(rf"\b{name}\b", shown)]
    assert not missing, f"{label}: the signature shown ({shown.strip()}) lacks {missing}"


@pytest.mark.parametrize("module", list(API))
def test_every_public_name_is_documented_with_its_signature_and_docstring(site, module):
    page, backend = API[module]
    if backend is not None and backend not in requested():
        pytest.skip(f"{backend} not in IAISREG_BACKENDS")
    mod = importlib.import_module(module)
    sections = api_sections((site[0] / "api" / page / "index.html").read_text(encoding="utf-8"))
    for name in mod.__all__:
        section = sections.get(f"{module}.{name}")
        assert section is not None, f"{module}.{name} is not in the API reference"
        signature = re.search(r'<div class="doc-signature highlight">(.*?)</div>', section, re.S)
        assert signature is not None, f"{module}.{name}: no signature"
        shown = text_of(signature[1])
        obj = getattr(mod, name)
        if callable(obj):
            check_signature(f"{module}.{name}", obj, shown)
        else:  # data: "name = value" or "name: type"
            assert re.match(rf"\s*{re.escape(name)}\s*[:=]", shown), f"{module}.{name}: shown as {shown.strip()}"
        docstring = text_of(section[signature.end():]).strip()
        assert len(docstring) > 10, f"{module}.{name} has no docstring in the API reference"


def test_the_semantics_page_renders_each_equation_next_to_its_function(site):
    page = (site[0] / "semantics" / "index.html").read_text(encoding="utf-8")
    rows = {text_of(m[1]).strip(): m[0] for m in re.finditer(r"<tr>\s*<td>(.*?)</td>.*?</tr>", page, re.S)}
    for eq in ("Eq. 6", "Eq. 7", "Eq. 8", "Eq. 9", "Eq. 10", "Eq. 11", "Eq. 12", "Eq. 13", "Eq. 16"):
        row = next((r for label, r in rows.items() if label.startswith(eq + ",") or label.startswith(eq + " ")), None)
        assert row is not None, f"{eq} is not in the equation table"
        assert 'class="arithmatex"' in row, f"{eq}: no formula"
        assert re.search(r"<code>iaisreg\.[\w.]+</code>", row), f"{eq}: no function"
    assert "ISDa" in text_of(rows["Eq. 9, ISDa"])


def nav_pages(nav) -> list[str]:
    """The page paths of a MkDocs nav."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in nav_pages(value)]
    return [p for item in nav for p in nav_pages(item)]


def test_the_nav_lists_every_page_and_every_listed_page_is_built(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    for page in listed:
        built = site[0] / ("index.html" if page == "index.md" else page[:-3] + "/index.html")
        assert built.is_file(), f"{page} is in the nav but was not built"
    unlisted = {p.name for p in (ROOT / "docs").glob("*.md")} - set(listed)
    assert not unlisted, f"pages missing from the nav of mkdocs.yml: {sorted(unlisted)}"
    assert {f"api/{page}.md" for page, _ in API.values()} <= set(listed)




@pytest.mark.parametrize("page, pictures", [
    ("index.html", ["iais_blocks.png", "demo_object_attention.png"]),
    ("demo/index.html", ["demo_object_attention.png", "demo_training_curves.png"]),
])
def test_the_pages_show_the_pictures(site, page, pictures):
    built = (site[0] / page).read_text(encoding="utf-8")
    shown = re.findall(r'<img [^>]*src="(?:\.\./)?img/([\w.]+)"', built)
    assert shown == pictures
    for name in pictures:
        width, height = png_size(site[0] / "img" / name)
        assert 600 <= width <= 2000 and 300 <= height <= 2000, (name, width, height)
        assert (ROOT / "docs" / "img" / name).stat().st_size < 200_000, f"{name} is not small"


def load_hook():
    spec = importlib.util.spec_from_file_location("api_reference", ROOT / "docs" / "api_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstrings_become_markdown():
    hook = load_hook()
    links = {"iaisreg.iais": "iaisreg.iais", "iaisreg.tf.IAISLoss": "iaisreg.tf._keras.IAISLoss"}
    text = ("As :func:`iaisreg.iais`; see :class:`IAISLoss` and :mod:`iaisreg.schedules`.\n\n"
            "Set-up::\n\n    t = masks(N)\n    loss = iais(t)\n\nAfter.\n\n"
            "    >>> 1 + 1\n    2\n\nEnd.")
    assert hook.markdown_docstring(text, links, scope="iaisreg.tf._keras.LambdaSchedule").splitlines() == [
        "As [`iaisreg.iais`][iaisreg.iais]; see [`IAISLoss`][iaisreg.tf._keras.IAISLoss] and "
        "`iaisreg.schedules`.", "", "Set-up:", "", "```python", "t = masks(N)", "loss = iais(t)", "```", "",
        "After.", "", "    ```pycon", "    >>> 1 + 1", "    2", "    ```", "", "End."]


def test_lazy_exports_are_documented_from_their_defining_module():
    hook = load_hook()
    assert hook.locate("iaisreg.tf", "IAISLoss") == "iaisreg.tf._keras.IAISLoss"
    assert hook.locate("iaisreg.tf", "iais") == "iaisreg.tf.iais"
    assert hook.locate("iaisreg", "iais") == "iaisreg.iais"  # re-exported: griffe follows the import
    assert hook.public_names("iaisreg") == list(importlib.import_module("iaisreg").__all__)
