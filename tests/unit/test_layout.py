"""The shape of the code, held to the tree: the README's layout names every module of etl/ (and
nothing that is gone), no function, class or module outgrows the limits a reader can hold, and
no module of etl/ imports another that (directly or not) imports it back."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ETL = ROOT / "etl"
LIMITS = {"function": 80, "class": 200, "module": 400}


def _modules() -> dict[str, Path]:
    """Every module of etl/ by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted(ETL.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _sizes(path: Path) -> Iterator[tuple[str, int, str]]:
    """(kind, lines, where) of the module and of every function and class in it."""
    text = path.read_text()
    yield "module", len(text.splitlines()), str(path.relative_to(ROOT))
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
            yield kind, (node.end_lineno or node.lineno) - node.lineno + 1, where


def test_no_function_class_or_module_outgrows_its_limit() -> None:
    """No function in etl/ is longer than 80 lines, no class than 200, no module than 400."""
    over = [
        f"{where}: {kind} of {lines} lines > {LIMITS[kind]}"
        for path in _modules().values()
        for kind, lines, where in _sizes(path)
        if lines > LIMITS[kind]
    ]
    assert not over, "\n".join(over)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The etl modules `name` imports, anywhere in it (TYPE_CHECKING and function bodies too).

    `from etl.pkg import sub` names the submodule only, as Python runs the package's
    __init__ first in any case; a package's own submodules do not count as importing it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
            found |= subs if len(subs) == len(node.names) else {node.module, *subs}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found & modules.keys() if m != name and not name.startswith(m + ".")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check below can fail: a -> b -> c -> a is one cycle, d alone is none."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    """No module of etl/ imports, directly or through others, a module that imports it."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == []


def _layout() -> set[str]:
    """The paths under etl/ that the layout block (the first code block of the README's
    Development section) names: `store/`, `store/db.py`, ..."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\n## Development\n.*?\n```\n(.*?)```", readme, re.S)
    assert block, "README.md's Development section has no layout block"
    named: set[str] = set()
    stack: list[tuple[int, str]] = []
    inside = False
    for line in block.group(1).splitlines():
        entry = re.match(r"( *)(\S+)", line)
        if not entry:
            continue
        depth, word = len(entry.group(1)), entry.group(2)
        if depth == 0:
            inside = word == "etl/"
            stack = []
            continue
        if not inside or not re.fullmatch(r"[\w.]+(\.py|/)", word):
            continue  # a description's continuation line
        while stack and stack[-1][0] >= depth:
            stack.pop()
        path = "".join(p for _, p in stack) + word
        named.add(path)
        if word.endswith("/"):
            stack.append((depth, word))
    return named


def test_readme_layout_matches_the_tree() -> None:
    """Every package and module of etl/ (but __init__.py) is in the README's layout, and
    everything the layout names exists."""
    tree = {
        str(p.relative_to(ETL)) + ("/" if p.is_dir() else "")
        for p in ETL.rglob("*")
        if (p.suffix == ".py" and p.name != "__init__.py")
        or (p.is_dir() and (p / "__init__.py").is_file())
    }
    named = _layout()
    assert sorted(tree - named) == [], "in etl/ but not in the README's layout"
    assert sorted(named - tree) == [], "in the README's layout but not in etl/"
