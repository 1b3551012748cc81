"""The docs stay true to the code: every variable console/settings.py reads is in docs/configuration.md's table
(and every variable the table lists is read somewhere), every relative link in the docs leads to a file, and the
README stays a user's guide that links to the rest."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READERS = {"env", "envbool", "envint", "envfloat", "envlist", "_gigabytes"}
NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def settings_variables() -> set[str]:
    """The names console/settings.py passes to its env helpers."""
    tree = ast.parse((ROOT / "console/settings.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in READERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def documented_variables() -> set[str]:
    """The names in the first column of docs/configuration.md's table."""
    names = set()
    for line in (ROOT / "docs/configuration.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            names |= set(NAME.findall(line.split("|")[1]))
    return names


def test_every_setting_is_documented():
    read = settings_variables()
    assert len(read) > 50  # the parser still finds the helpers' calls
    missing = sorted(read - documented_variables())
    assert not missing, f"read in console/settings.py, missing from docs/configuration.md: {missing}"


def test_every_documented_variable_is_read():
    code = "\n".join((ROOT / path).read_text(encoding="utf-8") for path in ("run", "ops/supervise.py"))
    stale = sorted(name for name in documented_variables() - settings_variables() if name not in code)
    assert not stale, f"in docs/configuration.md but read nowhere: {stale}"


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted(path for path in ROOT.glob("*/README.md") if path.parent.name not in {".venv", ".venv-vllm"})
    return files


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings."""
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_relative_links_lead_to_files_and_headings():
    broken = []
    for path in doc_files():
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            name, _, anchor = target.partition("#")
            linked = (path.parent / name) if name else path
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_readme_is_a_short_guide_that_links_to_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 260
    for doc in ("CONTRIBUTING.md", "docs/architecture.md", "docs/configuration.md", "docs/decisions/"):
        assert f"({doc}" in readme, doc
