"""The layout's rules, read from the code itself: apps never import the project package, and no
app writes (or names in SQL) another app's tables."""

import ast
import re
from pathlib import Path

import pytest
from django.apps import apps

ROOT = Path(__file__).resolve().parents[1]
APP_PACKAGES = ("core", "lifecycle", "governance", "hive", "accounts")
# Statements that change rows, and the table they name.
WRITE_SQL = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)\"?", re.IGNORECASE)
# ORM calls that write through a model's manager or queryset.
ORM_WRITES = {"create", "bulk_create", "get_or_create", "update_or_create", "update", "delete", "bulk_update"}


def _modules(package: str) -> list[Path]:
    return [path for path in sorted((ROOT / package).rglob("*.py")) if "migrations" not in path.parts]


def _imported_modules(tree: ast.AST) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _owner(path: Path) -> str:
    """The app label owning a module: the innermost installed app whose package holds it."""
    dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    owners = [c for c in apps.get_app_configs() if dotted == c.name or dotted.startswith(c.name + ".")]
    return max(owners, key=lambda c: len(c.name)).label if owners else dotted.split(".", 1)[0]


def _models() -> dict[str, str]:
    return {model.__name__: model._meta.app_label for model in apps.get_models()}


def _tables() -> dict[str, str]:
    return {model._meta.db_table: model._meta.app_label for model in apps.get_models(include_auto_created=True)}


def foreign_writes(source: str, owner: str) -> list[str]:
    """Where `source`, a module of app `owner`, writes or names another app's table."""
    models, tables = _models(), _tables()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [
                f"SQL writes {table}"
                for table in WRITE_SQL.findall(node.value)
                if table in tables and tables[table] != owner
            ]
        elif isinstance(node, ast.Attribute) and node.attr == "db_table":
            # Model._meta.db_table: the table's name, to put into SQL by hand.
            meta = node.value
            if isinstance(meta, ast.Attribute) and isinstance(meta.value, ast.Name):
                name = meta.value.id
                if models.get(name, owner) != owner:
                    found.append(f"line {node.lineno}: names {name}'s table")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ORM_WRITES:
            # Model.objects.<write>(...) and Model.objects.filter(...).<write>(...)
            target: ast.expr = node.func.value
            while isinstance(target, ast.Call | ast.Attribute):
                target = target.func if isinstance(target, ast.Call) else target.value
            if isinstance(target, ast.Name) and models.get(target.id, owner) != owner:
                found.append(f"line {node.lineno}: {target.id}.{node.func.attr}")
    return found


@pytest.mark.parametrize("package", APP_PACKAGES)
def test_apps__never_import_the_project_package(package):
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name in _imported_modules(ast.parse(path.read_text()))
        if name == "omk" or name.startswith("omk.")
    ]
    assert offenders == []


@pytest.mark.parametrize("package", APP_PACKAGES)
def test_apps__write_only_their_own_tables(package):
    offenders = [
        f"{path.relative_to(ROOT)} ({_owner(path)}): {finding}"
        for path in _modules(package)
        for finding in foreign_writes(path.read_text(), _owner(path))
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "source",
    [
        "OutboxEvent.objects.filter(id=1).update(attempts=0)",
        "OutboxEvent.objects.create(kind='x', payload={})",
        "cursor.execute('INSERT INTO outbox_outboxevent (id) VALUES (1)')",
        "cursor.execute(f'DELETE FROM {OutboxEvent._meta.db_table}')",
    ],
)
def test_foreign_writes__finds_a_planted_write(source):
    assert foreign_writes(source, "governance") != []
    assert foreign_writes(source, "outbox") == []
