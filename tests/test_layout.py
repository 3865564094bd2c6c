"""The layout stays readable: the imports the README shows work, and no module is dead."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "agelens"
#: Modules that nothing imports because something else starts them.
ENTRY_POINTS = {
    "agelens.__main__",  # python -m agelens
    "agelens.cli.main",  # the agelens command (pyproject's scripts)
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every agelens module a file imports, by absolute name (``from a import b`` gives both)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("agelens")}


def test_every_import_the_readme_shows_works():
    readme = (ROOT / "README.md").read_text()
    lines = re.findall(
        r"^(?:from agelens[\w.]* import [\w, ]+|import agelens[\w.]*)$", readme, re.M
    )
    assert len(lines) >= 2
    for line in lines:
        exec(line, {})  # the README's own import lines


def test_the_package_and_its_folders_import():
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name not in ENTRY_POINTS:
            importlib.import_module(name)


def test_every_module_is_imported_by_another_or_is_an_entry_point():
    sources = [
        *PACKAGE.rglob("*.py"),
        *(ROOT / "bench").glob("*.py"),
        *(ROOT / "tools").glob("*.py"),
    ]
    imported = set().union(*(imported_modules(path) for path in sources))
    # Packages are imported with any of their modules; the check is on the modules.
    modules = {module_name(path) for path in PACKAGE.rglob("*.py") if path.stem != "__init__"}
    dead = sorted(modules - ENTRY_POINTS - imported)
    assert not dead, f"modules nothing imports: {dead}"
