"""The layers' direction, read from the source: no module imports a layer above its own.

Layers, bottom up: (1) account records, (2) the engine (``pipelines``), (3) the request
workflow, (4) interfaces (web views, API, admin, forms, URLs, management commands).
Every import counts, also one written inside a function; and none may be written
inside a function (to dodge a cycle) except under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("accounts_app", "pipelines", "portal")

RECORDS, ENGINE, WORKFLOW, INTERFACES = 1, 2, 3, 4
LAYER_NAMES = {RECORDS: "records", ENGINE: "engine", WORKFLOW: "workflow", INTERFACES: "interfaces"}

# Project modules every layer may use: they import nothing of the apps.
BASE_MODULES = {
    "portal",
    "portal.apps",
    "portal.celery",
    "portal.durations",
    "portal.errors",
    "portal.heartbeats",
    "portal.local",
    "portal.local_postgres",
    "portal.logging",
    "portal.models",
    "portal.settings",
}
RECORDS_MODULES = {
    "accounts_app",
    "accounts_app.models",
    "accounts_app.crypto",
    "accounts_app.names",
    "accounts_app.records",
    "accounts_app.roles",
}
INTERFACE_MODULES = {
    "accounts_app.lifecycle_views",  # extend, exempt, drift check and reconcile pages
    "pipelines.cli",  # the management commands' base class and input readers
    "portal.api_errors",
    "portal.lookups",  # the objects web pages and the API act on (404/403)
    "portal.metrics",
    "portal.middleware",
    "portal.urls",
    "portal.views",
    "portal.web_errors",
    "portal.wsgi",
}
INTERFACE_PARTS = {"views", "api", "admin", "forms", "urls", "templatetags", "commands"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The module's layer; 0 for the base modules every layer may import."""
    parts = module.split(".")
    if module in BASE_MODULES or parts[:2] == ["portal", "migrations"]:
        return 0
    if module in INTERFACE_MODULES or INTERFACE_PARTS & set(parts[1:]):
        return INTERFACES
    if module in RECORDS_MODULES or parts[:2] == ["accounts_app", "migrations"]:
        return RECORDS
    if parts[0] == "pipelines":
        return ENGINE
    if parts[0] == "accounts_app":
        return WORKFLOW
    raise AssertionError(f"no layer for {module}: classify it in tests/unit/test_layers.py")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool
    type_checking: bool


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_app_ready(*, node: ast.AST, path: Path) -> bool:
    """``AppConfig.ready`` in an apps.py: Django's place for imports that need the app
    registry (signal receivers using models), which a module top cannot do."""
    return path.name == "apps.py" and isinstance(node, ast.FunctionDef) and node.name == "ready"


def _resolve(*, node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(*, path: Path, importer: str, known: set[str]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, *, in_function: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                module = _resolve(
                    node=node, importer=importer, is_package=path.name == "__init__.py"
                )
                # `from package import module` imports the module.
                targets = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                    for alias in node.names
                ]
            found.extend(
                Import(importer, target, node.lineno, in_function, type_checking)
                for target in targets
            )
            return
        inside = in_function or (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            and not _is_app_ready(node=node, path=path)
        )
        for child in ast.iter_child_nodes(node):
            guarded = type_checking or (
                isinstance(node, ast.If) and _is_type_checking(node.test) and child in node.body
            )
            visit(child, in_function=inside, type_checking=guarded)

    visit(tree, in_function=False, type_checking=False)
    return found


def project_files() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if ".venv" not in path.parts
    )


def all_imports() -> list[Import]:
    files = project_files()
    known = {module_name(path) for path in files}
    return [
        item
        for path in files
        for item in imports_of(path=path, importer=module_name(path), known=known)
    ]


def _project_module(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def test_every_project_module_has_a_layer() -> None:
    for path in project_files():
        layer_of(module_name(path))  # raises for an unclassified module


def test_no_module_imports_a_higher_layer() -> None:
    upward: list[str] = []
    for item in all_imports():
        if item.type_checking or not _project_module(item.imported):
            continue
        mine, theirs = layer_of(item.importer), layer_of(item.imported)
        if theirs > mine:
            upward.append(
                f"{item.importer}:{item.line} ({LAYER_NAMES.get(mine, 'base')}) imports "
                f"{item.imported} ({LAYER_NAMES[theirs]})"
            )
    assert upward == [], "imports pointing up:\n" + "\n".join(sorted(set(upward)))


def test_no_import_inside_a_function() -> None:
    local = sorted(
        {
            f"{item.importer}:{item.line} imports {item.imported}"
            for item in all_imports()
            if item.in_function and not item.type_checking
        }
    )
    assert local == [], "imports inside functions:\n" + "\n".join(local)


def test_the_classification_reads_the_layers_as_documented() -> None:
    assert layer_of("accounts_app.records") == RECORDS
    assert layer_of("pipelines.engine") == ENGINE
    assert layer_of("pipelines.stages.plan") == ENGINE
    assert layer_of("accounts_app.services") == WORKFLOW
    assert layer_of("accounts_app.api.views") == INTERFACES
    assert layer_of("pipelines.views") == INTERFACES
    assert layer_of("accounts_app.management.commands.account_provision") == INTERFACES
    assert layer_of("portal.urls") == INTERFACES
    assert layer_of("portal.errors") == 0


def test_the_checker_sees_an_import_inside_a_function_and_resolves_relative_ones(
    tmp_path: Path,
) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from accounts_app.services import USER_RUN_KINDS\n"
        "from . import models\n"
        "def f():\n"
        "    from accounts_app import services\n"
    )
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    known = {"pipelines.models", "accounts_app.services"}
    found = imports_of(path=probe, importer="pipelines.probe", known=known)
    assert [(i.imported, i.in_function, i.type_checking) for i in found] == [
        ("typing", False, False),
        ("accounts_app.services", False, True),
        ("pipelines.models", False, False),
        ("accounts_app.services", True, False),
    ]
