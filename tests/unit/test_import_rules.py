"""The architecture's rules, read from the source's imports (no import is executed).

* No import cycle among the product's modules (imports under
  ``TYPE_CHECKING`` and inside functions count: a cycle hidden there is
  still one).
* The pure cores (wire formats, G.711, event types, the conversation and
  the call states) do no I/O and read no clock: neither they nor any
  product module they import, transitively, imports asyncio, sockets,
  ``time``, HTTP or websocket libraries.
* The product never imports the dev tools (model server, demo, rig) at
  module level, never imports ``tests``, ``bench`` or ``asterisk``, and never
  edits ``sys.path``; ``bench/`` imports nothing from ``tests/``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "controller"
DEVTOOLS = "controller.devtools"

PURE = [
    "controller.rtp.packet",
    "controller.rtp.seq",
    "controller.rtp.stats",
    "controller.audio.g711",
    "controller.audio.constants",
    "controller.audio.convert",
    "controller.media.uplink",
    "controller.ari.events",
    "controller.ari.wsrest",
    "controller.pool.takeover",
    "controller.realtime.events",
    "controller.call.bargein",
    "controller.call.conversation",
    "controller.call.state",
    "controller.call.tools",
    "controller.pricing",
    "controller.recordview",
    "controller.store.url",
    "controller.store.migrations",
    "controller.templates",
    "controller.redact",
]
#: Modules (and packages) that do I/O or read the clock.
IO_MODULES = (
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "time",
    "threading",
    "subprocess",
    "urllib.request",
    "http.client",
    "http.server",
    "aiohttp",
    "websockets",
)


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    top_level: bool  # at module level (incl. under `if TYPE_CHECKING`), not in a function


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    functions: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        top = id(node) not in functions
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, top)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield Import(base, top)
            for alias in node.names:  # `from controller.call import call` imports a module
                yield Import(f"{base}.{alias.name}", top)


def product_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for p in sorted(PACKAGE.rglob("*.py"))
        if not module_name(p).startswith(DEVTOOLS)
    }


def internal(name: str, known: dict[str, Path]) -> str | None:
    """The product module ``name`` refers to, if any (``a.b.Class`` -> ``a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    known = product_modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {internal(i.module, known) for i in imports_of(path)}
        # A module's parent packages are imported first; that is no edge of its own.
        edges[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_rules_see_what_they_check() -> None:
    edges = graph()
    assert "controller.call.call" in edges and "controller.app" in edges
    assert "controller.call.conversation" in edges["controller.call.call"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert not any(name.startswith(DEVTOOLS) for name in edges)


def test_the_product_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("pure", PURE)
def test_pure_modules_do_no_io_even_through_what_they_import(pure: str) -> None:
    known = product_modules()
    edges = graph()
    seen, todo = set(), [pure]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imp in imports_of(known[name]):
            assert not any(imp.module == m or imp.module.startswith(m + ".") for m in IO_MODULES), (
                f"{pure} must do no I/O, but {name} imports {imp.module}"
            )
        todo += edges[name]


def test_the_product_does_not_import_dev_tools_tests_or_edit_sys_path() -> None:
    problems = []
    for name, path in product_modules().items():
        for imp in imports_of(path):
            root = imp.module.split(".")[0]
            if root in ("tests", "bench", "asterisk"):
                problems.append(f"{name} imports {imp.module}")
            elif imp.module.startswith(DEVTOOLS) and imp.top_level:
                problems.append(f"{name} imports {imp.module} at module level")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                problems.append(f"{name} uses sys.path")
    assert problems == []


def test_dev_tools_stay_out_of_the_product_but_keep_working_from_the_cli() -> None:
    cli = [i for i in imports_of(PACKAGE / "cli.py") if i.module.startswith(DEVTOOLS)]
    assert cli, "the CLI still offers model-server and demo"
    assert not any(i.top_level for i in cli)


def test_benchmarks_import_nothing_from_tests() -> None:
    problems = [
        f"{path.name} imports {imp.module}"
        for path in sorted((REPO / "bench").glob("*.py"))
        for imp in imports_of(path)
        if imp.module.split(".")[0] == "tests"
    ]
    assert problems == []
