"""The pure core stays pure: rules/ and handlers/ never import the shell or I/O libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = (
    "gateway",
    "storage",
    "sqlalchemy",
    "alembic",
    "aiosmtpd",
    "aiosmtplib",
    "imapclient",
    "apscheduler",
    "psycopg",
    "socket",
    "asyncio",
    "click",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def pure_files() -> list[Path]:
    return sorted(p for package in ("rules", "handlers") for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_nothing_from_the_shell(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_layering_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from storage.db import Database\nimport sqlalchemy.orm\n")
    assert imported_modules(sample) == {"storage.db", "sqlalchemy.orm"}
