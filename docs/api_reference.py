"""MkDocs hook: the API reference pages, generated from each public module's ``__all__``.

For every module of :data:`MODULES`, the build gets one page ``api/<name>.md``
holding the module docstring and one mkdocstrings block per name of the
module's ``__all__``, in that order. ``__all__`` is read from the source with
:mod:`ast`, so building the site imports no framework. A name that the module
exports lazily (through a module ``__getattr__``, as :mod:`iaisreg.tf` does
with its Keras classes) is documented from the submodule that defines it,
under its public name. A name of ``__all__`` defined nowhere stops the build.

The docstrings are written for both ``help()`` and the site: reST roles
(``:func:`iais```) and bare doctest blocks (``>>>``). :class:`DocstringMarkup`,
a Griffe extension, turns them into Markdown for mkdocstrings: a role becomes
a link when it names a documented public object and code otherwise, a doctest
block a ``pycon`` code block, a ``::`` literal block a ``python`` code block.

``tests/test_docs_site.py`` builds the site in strict mode and checks that
every public name appears with its signature and docstring.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import griffe
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent

#: module -> page name under ``api/``
MODULES = {"iaisreg": "core", "iaisreg.torch": "torch", "iaisreg.jax": "jax", "iaisreg.tf": "tf"}


def module_source(module: str) -> Path:
    """The source file of ``module`` (a package's ``__init__.py``) in this checkout."""
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names bound at the top level of a module: definitions, assignments and imports."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def public_names(module: str) -> list[str]:
    """``module.__all__``, read from its source."""
    tree = ast.parse(module_source(module).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise PluginError(f"{module} has no __all__")


def locate(module: str, name: str) -> str:
    """The dotted path mkdocstrings documents ``module.name`` from."""
    source = module_source(module)
    if name in _top_level_names(ast.parse(source.read_text(encoding="utf-8"))):
        return f"{module}.{name}"
    if source.name == "__init__.py":  # a lazy export: the submodule that defines it
        for sub in sorted(source.parent.glob("*.py")):
            tree = ast.parse(sub.read_text(encoding="utf-8"))
            defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            if sub.name != "__init__.py" and name in defined:
                return f"{module}.{sub.stem}.{name}"
    raise PluginError(f"{module}.__all__ lists {name!r}, which {module} does not define or import")


def page_text(module: str) -> str:
    """The Markdown of ``module``'s API page."""
    lines = [f"# `{module}`", "", f"::: {module}", "    options:", "      show_root_heading: false",
             "      members: false", ""]
    for name in public_names(module):
        lines.append(f"::: {locate(module, name)}")
        if locate(module, name) != f"{module}.{name}":
            lines += ["    options:", f"      heading: {module}.{name}", f"      toc_label: {name}"]
        lines.append("")
    return "\n".join(lines)


def on_files(files, config):
    """Add the generated API pages to the build."""
    for module, page in MODULES.items():
        files.append(File.generated(config, f"api/{page}.md", content=page_text(module)))
    return files


# ------------------------------------------------------------------ docstring markup

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj):`~?([^`]+)`")


def documented_paths() -> dict[str, str]:
    """Public name (``iaisreg.tf.IAISLoss``) -> the identifier its API entry is anchored at."""
    return {f"{m}.{n}": locate(m, n) for m in MODULES for n in public_names(m)}


def _fence(lines: list[str], start: int, language: str, literal: bool) -> tuple[list[str], int]:
    """The block starting at ``lines[start]`` as a fenced code block; returns it and the index after it.

    A doctest block runs to the next blank line; a literal block (``literal``)
    runs while the lines are blank or indented deeper than its first line.
    """
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start
    while end < len(lines):
        line = lines[end]
        deeper = not line.strip() or len(line) - len(line.lstrip()) >= indent
        if (literal and not deeper) or (not literal and not line.strip()):
            break
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    pad = " " * (indent if not literal else max(0, indent - 4))
    body = [line[indent:] for line in lines[start:end]]
    return [f"{pad}```{language}", *(pad + b if b else "" for b in body), f"{pad}```"], end


def markdown_docstring(text: str, links: dict[str, str], scope: str = "") -> str:
    """``text`` (a docstring with reST roles, doctest and literal blocks) as Markdown; see the module docstring.

    A role's target is looked up as written, then inside each enclosing module of ``scope`` (a dotted path).
    """

    def role(match: re.Match) -> str:
        target, parts = match[1], scope.split(".")
        for cut in range(len(parts), -1, -1):
            path = ".".join(parts[:cut] + [target])
            if path in links:
                return f"[`{target}`][{links[path]}]"
        return f"`{target}`"

    lines, out, i = ROLE.sub(role, text).splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            block, i = _fence(lines, i, "pycon", literal=False)
            out += block
            continue
        if line.rstrip().endswith("::") and i + 2 < len(lines) and not lines[i + 1].strip():
            out += [line.rstrip()[:-1], ""]
            block, i = _fence(lines, i + 2, "python", literal=True)
            out += block
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _namedtuple_init(cls: griffe.Class) -> None:
    """Give a ``NamedTuple`` class the ``__init__`` of its fields, so that its signature is shown."""
    if "__init__" in cls.members or not any(str(base).endswith("NamedTuple") for base in cls.bases):
        return
    fields = [m for m in cls.members.values() if not m.is_alias and m.is_attribute and not m.name.startswith("_")]
    params = griffe.Parameters(*(griffe.Parameter(f.name, annotation=f.annotation, default=f.value,
                                                  kind=griffe.ParameterKind.positional_or_keyword) for f in fields))
    cls.set_member("__init__", griffe.Function("__init__", parameters=params, lineno=cls.lineno,
                                               endlineno=cls.lineno))


def _option_table(func: griffe.Function, decorator: griffe.Decorator) -> dict | None:
    """The options table a ``takes_options(table)`` decorator names: ``OPTIONS`` without an argument, else the
    table's defining expression evaluated with ``OPTIONS`` at hand (None when that is not enough)."""
    from iaisreg._options import OPTIONS  # the core imports no framework

    args = getattr(decorator.value, "arguments", [])
    if not args:
        return dict(OPTIONS)
    table = func.module.members.get(str(args[0]))
    try:
        return dict(eval(str(table.value), {"__builtins__": {}}, {"OPTIONS": OPTIONS, "_OPTIONS": OPTIONS}))
    except Exception:  # not a table of OPTIONS entries: keep **options
        return None


def _expand_options(func: griffe.Function) -> None:
    """Show a ``@takes_options`` function's signature as ``inspect.signature`` does at run time: one keyword-only
    parameter per option, with its default, in place of ``**options`` (before ``xp``); see
    ``iaisreg._options.takes_options``."""
    decorator = next((d for d in func.decorators if d.callable_path.endswith("takes_options")), None)
    table = _option_table(func, decorator) if decorator is not None else None
    if table is None:
        return
    params = [p for p in func.parameters if p.kind is not griffe.ParameterKind.var_keyword]
    at = next((i for i, p in enumerate(params) if p.name == "xp"), len(params))
    options = [griffe.Parameter(name, annotation="str", default=repr(option.default),
                                kind=griffe.ParameterKind.keyword_only) for name, option in table.items()]
    func.parameters = griffe.Parameters(*params[:at], *options, *params[at:])


class DocstringMarkup(griffe.Extension):
    """Griffe extension: the docstrings of a loaded package as Markdown (:func:`markdown_docstring`), signatures
    for ``NamedTuple`` classes, and the options of ``@takes_options`` functions in their signatures."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        links = documented_paths()
        for obj in list(_objects(pkg)):
            if obj.docstring is not None:
                obj.docstring.value = markdown_docstring(obj.docstring.value, links, obj.path)
            if obj.is_class:
                _namedtuple_init(obj)
            if obj.is_function:
                _expand_options(obj)


def _objects(obj: griffe.Object):
    """``obj`` and every object defined under it (aliases excluded)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)
