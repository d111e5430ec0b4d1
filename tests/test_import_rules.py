"""The packages import one way (docs/architecture.md): the node uses inference/ and db/, never the reverse.

`inference/` is the analysis alone (DICOM files in, typed result out) and must not import the node or the
database; `db/` is the schema and its queries and must not import the node or the analysis. A small AST
walk over every .py file, so that a forbidden import fails here before it becomes a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "inference": ("dicom_node", "db"),
    "db": ("dicom_node", "inference"),
}


def imported_packages(source: str) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import, wherever it is (also inside functions)."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for path in sorted((REPO / package).rglob("*.py"))
        for line, target in sorted(imported_packages(path.read_text(encoding="utf-8")))
        if target in FORBIDDEN[package]
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_in_the_allowed_direction(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_imports_in_every_form() -> None:
    source = "import db.models\nfrom dicom_node.config import Settings\ndef f():\n    import inference\n"
    assert {target for _, target in imported_packages(source)} == {"db", "dicom_node", "inference"}
    assert imported_packages("from . import sibling\nfrom .x import y\n") == set()
