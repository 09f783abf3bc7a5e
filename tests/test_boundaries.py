"""The architecture, enforced: comparators/ stays pure, the shim knows nothing of the sample ledger, and
SQL stays behind the store's boundary (shim/store/)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPARATORS = sorted((ROOT / "comparators").rglob("*.py"))
SHIM_AND_COMPARATORS = sorted([*(ROOT / "shim").rglob("*.py"), *COMPARATORS])


def imported_modules(source: str) -> Iterator[str]:
    """Every module the source imports, wherever the import is: statements (also inside functions)
    and calls of importlib.import_module / __import__ with a literal name."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.args[0].value


def _top(module: str) -> str:
    return module.split(".")[0]


def forbidden_in_comparators(module: str) -> bool:
    """grpc itself, the grpc_* packages built on it (grpc_status, grpc_tools), and the shim."""
    top = _top(module)
    return top in ("grpc", "shim") or top.startswith("grpc_")


@pytest.mark.parametrize(
    ("source", "found"),
    [
        pytest.param("import grpc", ["grpc"], id="import"),
        pytest.param("import grpc.aio as aio", ["grpc.aio"], id="import-submodule-as"),
        pytest.param("from grpc import aio", ["grpc"], id="from-import"),
        pytest.param("from shim.app import Shim", ["shim.app"], id="from-shim"),
        pytest.param("import os, shim", ["os", "shim"], id="several"),
        pytest.param("def f():\n    import grpc_status\n", ["grpc_status"], id="inside-a-function"),
        pytest.param(
            "import importlib\nimportlib.import_module('grpc')", ["importlib", "grpc"], id="import-module"
        ),
        pytest.param("__import__('shim.cli')", ["shim.cli"], id="dunder-import"),
        pytest.param("from . import _model", [], id="relative"),
        pytest.param("x = 'grpc'  # import grpc", [], id="text-is-no-import"),
    ],
)
def test_import_finder(source: str, found: list[str]) -> None:
    """The checker below sees every form an import can take, and nothing else."""
    assert list(imported_modules(source)) == found


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("grpc", True),
        ("grpc.aio", True),
        ("grpc_status.rpc_status", True),
        ("shim", True),
        ("shim.config", True),
        ("google.protobuf", False),
        ("google.rpc.status_pb2", False),
        ("deepdiff", False),
        ("shimmer", False),
        ("grpcio_like", False),
    ],
)
def test_forbidden_in_comparators(module: str, forbidden: bool) -> None:
    """Forbidden means grpc, a grpc_* package or the shim, matched on the top-level package name."""
    assert forbidden_in_comparators(module) is forbidden


def test_there_are_modules_to_check() -> None:
    """The walk finds the packages' modules (an empty walk would pass every check below)."""
    names = {p.relative_to(ROOT).as_posix() for p in SHIM_AND_COMPARATORS}
    assert {
        "comparators/_compare.py",
        "comparators/descriptors.py",
        "shim/cli/__init__.py",
        "shim/app.py",
    } <= names


@pytest.mark.parametrize("path", COMPARATORS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_comparators_never_import_grpc_or_the_shim(path: Path) -> None:
    """comparators/ is pure: it can run without grpc and without the shim."""
    bad = [m for m in imported_modules(path.read_text(encoding="utf-8")) if forbidden_in_comparators(m)]
    assert bad == []


@pytest.mark.parametrize("path", SHIM_AND_COMPARATORS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shim_knows_nothing_of_the_sample_ledger(path: Path) -> None:
    """Neither the shim nor the comparators import sample_ledger or mention its bank.v1 package."""
    source = path.read_text(encoding="utf-8")
    assert [m for m in imported_modules(source) if _top(m) == "sample_ledger"] == []
    assert "bank.v1" not in source


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports, wherever the import is (TYPE_CHECKING blocks and
    functions included); `from pkg import sub` counts as importing `pkg.sub`, not `pkg`."""
    paths = {_module_name(p): p for p in SHIM_AND_COMPARATORS if "_proto" not in p.parts}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [s for s in subs if s in paths]
                if len(targets) < len(subs):
                    targets.append(node.module)
            graph[name].update(t for t in targets if t in paths and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_not_even_for_type_checking() -> None:
    """No module of shim/ or comparators/ imports, even for type checking alone, a module that imports it
    back: each concern can be read, and tested, without the ones above it."""
    assert _cycles(_import_graph()) == []


def _public_exceptions() -> list[tuple[str, type[BaseException]]]:
    """(module, class) of every public exception class the shim's modules define."""
    import importlib
    import inspect

    found = []
    for path in sorted((ROOT / "shim").rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        if "_proto" in relative.parts or relative.name == "__main__":
            continue
        name = ".".join(relative.parts).removesuffix(".__init__")
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException) and not cls_name.startswith("_"):
                found.append((name, cls))
    return found


def test_every_public_exception_of_the_shim_is_in_the_one_tree() -> None:
    """shim.errors documents the tree: every public exception the shim defines derives from ShimError,
    and the tree's picture names each one."""
    from shim import errors

    found = _public_exceptions()
    assert len(found) >= 8
    outside = [f"{module}.{cls.__name__}" for module, cls in found if not issubclass(cls, errors.ShimError)]
    assert outside == []
    picture = errors.__doc__ or ""
    undocumented = [
        c.__name__ for _, c in found if c is not errors.ShimError and f"── {c.__name__} " not in picture
    ]
    assert undocumented == []


@pytest.mark.parametrize("path", SHIM_AND_COMPARATORS, ids=lambda p: str(p.relative_to(ROOT)))
def test_grpc_status_codes_come_from_the_one_table(path: Path) -> None:
    """No module names a status code of its own (`_UNAVAILABLE = 14`): they are comparators.Code."""
    from comparators import Code

    names = {name for code in Code for name in (code.name, f"_{code.name}")}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, int)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in names
    ]
    assert own == []


PACKAGES = ("shim", "comparators", "sample_ledger", "bench", "tools")


def private_imports(source: str, own: str) -> list[str]:
    """What the source imports that is private to another of the project's packages: a module or a name
    with a leading underscore (`shim._handler`, `from shim.cli import _parser`). The generated protobuf
    code (`_proto` packages) is the wire interface, which clients of a service import by design."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == own or parts[0] not in PACKAGES or "_proto" in parts:
                continue
            if any(part.startswith("_") for part in parts[1:]):
                found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != own and parts[0] in PACKAGES and "_proto" not in parts:
                    found += [alias.name] if any(p.startswith("_") for p in parts[1:]) else []
    return found


@pytest.mark.parametrize(
    ("source", "own", "found"),
    [
        pytest.param("from shim._text import cell", "sample_ledger", ["shim._text"], id="private-module"),
        pytest.param("from shim.cli import _parser", "tools", ["shim.cli._parser"], id="private-name"),
        pytest.param("import comparators._walk", "shim", ["comparators._walk"], id="import"),
        pytest.param("from shim._handler import Route", "shim", [], id="within-its-package"),
        pytest.param("from shim._proto.shim.v1 import admin_pb2", "bench", [], id="generated-code"),
        pytest.param("from grpc._cython import cygrpc", "shim", [], id="not-the-projects"),
    ],
)
def test_private_import_finder(source: str, own: str, found: list[str]) -> None:
    assert private_imports(source, own) == found


@pytest.mark.parametrize(
    "path",
    sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "_proto" not in p.parts),
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_a_leading_underscore_means_private_to_the_package(path: Path) -> None:
    """No package reaches what another package keeps private (tests aside: they pin private behaviour)."""
    own = path.relative_to(ROOT).parts[0]
    assert private_imports(path.read_text(encoding="utf-8"), own) == []


# -- the store's boundary: SQL lives in shim/store/, which stands on nothing of the shim but its errors --

SQL = re.compile(r"\bSELECT\b.*\bFROM\b|\bINSERT INTO\b|\bUPDATE\b .*\bSET\b|\bDELETE FROM\b", re.DOTALL)
STORE = ROOT / "shim" / "store"
# modules outside shim/store/ allowed SQL of their own, each with why; remove an entry once its SQL has moved
SQL_ELSEWHERE = {
    # the evidence owns the report's counting queries (read-only GROUP BYs over the comparisons the store's
    # repository writes), in shim/evidence/queries.py
    "shim/evidence/queries": "the report's counting queries, which the evidence owns",
}
SHIM_OUTSIDE_THE_STORE = sorted(
    p for p in (ROOT / "shim").rglob("*.py") if STORE not in p.parents and "_proto" not in p.parts
)


def string_literals(source: str) -> Iterator[str]:
    """The text of every string literal; an f-string's replacement fields read as {}."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, ast.JoinedStr):
            yield "".join(
                part.value if isinstance(part, ast.Constant) and isinstance(part.value, str) else "{}"
                for part in node.values
            )


def sql_in(source: str) -> list[str]:
    return [text for text in string_literals(source) if SQL.search(text)]


@pytest.mark.parametrize(
    ("source", "found"),
    [
        pytest.param('q = "SELECT kind FROM id_pairs"', True, id="select"),
        pytest.param(
            'q = ("SELECT kind, COUNT(*)"\n     " FROM id_pairs GROUP BY kind")', True, id="implicit-concat"
        ),
        pytest.param('q = f"SELECT {columns} FROM id_pairs{where}"', True, id="f-string"),
        pytest.param('q = "INSERT INTO modes (scope) VALUES (?)"', True, id="insert"),
        pytest.param('q = "UPDATE shim_schema SET version = ?"', True, id="update"),
        pytest.param('q = f"DELETE FROM intents WHERE id = {x}"', True, id="delete"),
        pytest.param('"""Select the keys from the store, then update them."""', False, id="prose"),
        pytest.param("# SELECT kind FROM id_pairs", False, id="comment"),
        pytest.param('q = "SELECT"', False, id="a-word-alone"),
    ],
)
def test_sql_finder(source: str, found: bool) -> None:
    """The checker below finds a statement in any string literal, and nothing in prose or comments."""
    assert bool(sql_in(source)) is found


def _listed(path: Path) -> str | None:
    """The listed exception that allows `path` SQL (its entry in SQL_ELSEWHERE), or None."""
    relative = path.relative_to(ROOT).as_posix()
    return next((p for p in SQL_ELSEWHERE if relative == f"{p}.py" or relative.startswith(f"{p}/")), None)


@pytest.mark.parametrize("path", SHIM_OUTSIDE_THE_STORE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_sql_lives_in_the_store(path: Path) -> None:
    """No module of the shim outside shim/store/ holds a SQL statement: each domain's SQL is in its
    repository there (shim/store/pairs.py, marks.py, ...), the listed exception apart."""
    listed = _listed(path)
    if listed is not None:
        pytest.skip(f"listed exception: {SQL_ELSEWHERE[listed]}")
    assert sql_in(path.read_text(encoding="utf-8")) == []


def test_the_exceptions_to_the_sql_rule_are_still_needed() -> None:
    """Each listed exception still holds SQL: once it has moved into the store, the entry goes too."""
    for prefix in SQL_ELSEWHERE:
        paths = [p for p in SHIM_OUTSIDE_THE_STORE if _listed(p) == prefix]
        assert any(sql_in(p.read_text(encoding="utf-8")) for p in paths), f"{prefix}: no SQL left"


def test_the_store_has_modules_and_sql() -> None:
    """The walk below finds the store's modules, and the SQL checker finds their SQL."""
    names = {p.name for p in STORE.glob("*.py")}
    assert {"__init__.py", "engine.py", "migrations.py", "pairs.py", "marks.py", "comparisons.py"} <= names
    assert sql_in((STORE / "pairs.py").read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", sorted(STORE.glob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_store_stands_on_nothing_of_the_shim_but_its_errors(path: Path) -> None:
    """shim/store/ imports, of the shim, only shim.errors and its own modules: it can be read, tested and
    changed without the rest of the shim, and the rest reaches the database only through it."""
    shim_imports = [m for m in imported_modules(path.read_text(encoding="utf-8")) if _top(m) == "shim"]
    outside = [
        m
        for m in shim_imports
        if m != "shim.errors" and m != "shim.store" and not m.startswith("shim.store.")
    ]
    assert outside == []


@pytest.mark.parametrize("path", sorted(STORE.glob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_store_is_small_modules(path: Path) -> None:
    """No module of shim/store/ passes 300 lines (the engine, the worker, each repository: one job each)."""
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 300


@pytest.mark.parametrize(
    "path", sorted((ROOT / "shim" / "shadow").glob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_the_shadow_side_is_split_by_concern(path: Path) -> None:
    """No module of shim/shadow/ (admission, ordering, the call, its ending, ids learned) passes about 300
    lines: 320 at most."""
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 320


@pytest.mark.parametrize(
    "path",
    [p for p in SHIM_AND_COMPARATORS if "_proto" not in p.parts],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_a_module_over_400_lines_says_why_at_its_top(path: Path) -> None:
    """Modules stay small; one that is not says why in its docstring ("Over 400 lines: ...")."""
    source = path.read_text(encoding="utf-8")
    if len(source.splitlines()) > 400:
        assert "Over 400 lines" in (ast.get_docstring(ast.parse(source)) or "")
