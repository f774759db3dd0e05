"""The fence around the development tools (controller.devtools), checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTROLLER = ROOT / "controller"
DEVTOOLS = CONTROLLER / "devtools"


def _modules(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[str]:
    """Every module name ``path`` imports (absolute imports only)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_no_controller_module_touches_sys_path() -> None:
    offenders = []
    for path in _modules(CONTROLLER):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders


def test_bench_imports_nothing_from_tests() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _modules(ROOT / "bench")
        for name in _imports(path)
        if name == "tests" or name.startswith("tests.")
    ]
    assert not offenders


def test_devtools_import_nothing_from_tests() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _modules(DEVTOOLS)
        for name in _imports(path)
        if name == "tests" or name.startswith("tests.")
    ]
    assert not offenders


def test_product_never_imports_devtools() -> None:
    """Only controller.cli names devtools, inside a function (a lazy import)."""
    product = [p for p in _modules(CONTROLLER) if DEVTOOLS not in p.parents]
    top_level: list[str] = []
    for path in product:
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                top_level += [f"{path.relative_to(ROOT)}: {n}" for n in names if "devtools" in n]
        if path.name != "cli.py":
            assert not [n for n in _imports(path) if "devtools" in n], path
    assert not top_level
    # And at run time: loading every product module pulls in no devtools module.
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in product
        if p.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from controller.cli import build_parser\n"
        "build_parser()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('controller.devtools'))\n"
        "sys.exit(f'devtools loaded: {loaded}' if loaded else 0)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
