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


#: "No module over about 300 lines, no folder over about 10 modules" (docs/architecture.md).
MAX_MODULE_LINES = 320
MAX_FOLDER_MODULES = 10


def test_modules_and_folders_stay_small():
    too_long = {
        module_name(path): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    crowded = {
        str(folder.relative_to(PACKAGE.parent)): count
        for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir())]
        if (count := len([p for p in folder.glob("*.py") if p.stem != "__init__"]))
        > MAX_FOLDER_MODULES
    }
    assert not crowded, f"folders over {MAX_FOLDER_MODULES} modules: {crowded}"


def test_readme_is_a_short_guide_that_opens_with_both_set_up_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200
    first_screen = "\n".join(lines[:25])
    assert first_screen.count("python3 -m venv .venv") == 2
    assert "agelens predict" in first_screen
    assert "pytest" in first_screen


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip("# ").lower())
    return text.replace(" ", "-")


def test_links_between_the_docs_lead_somewhere():
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]*)(?:#([\w-]+))?\)", page.read_text()):
            path, anchor = target
            if path.startswith("http"):
                continue
            linked = (page.parent / path) if path else page
            assert linked.exists(), f"{page.name} links to missing {path}"
            if anchor:
                headings = re.findall(r"^#+ .*$", linked.read_text(), re.M)
                assert anchor in {anchor_of(h) for h in headings}, f"{page.name}: #{anchor}"
