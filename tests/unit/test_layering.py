"""Layering: no import cycles, and the packages depend one way only.

``contract`` depends on no other package of the project; ``aggregator`` and ``participants``
on ``contract`` only; the example saga, ``order_saga``, on all three; the trip example,
``trip_booking``, on ``contract`` and ``aggregator`` (and the first example's local broker, for its
demo), never on ``participants``; ``benchmarks`` on any.

Two checks. **Statically**, every module of the project is parsed and every import it makes
anywhere (at module level, inside a function, under ``TYPE_CHECKING``) is an edge of the
module graph, which must have no cycle and no edge against the layering: an import a function
makes late, to dodge a cycle at run time, still counts. **At run time**, every module imports
alone in a fresh interpreter (a cycle that breaks only when one side is imported first fails
here) and loads no module of a package it must not depend on.

For the run-time check, one driver process imports the project's third-party libraries
(pydantic, aiohttp, ...) and *none* of the project's modules, then forks one child per module;
each child is thus the first to import anything of the project, exactly as
``python -c "import X"`` would be, at a fraction of the cost. Where ``os.fork`` is missing,
each module gets its own ``python -c`` instead.
"""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The packages imported at run time (``benchmarks`` needs the bench extra: checked statically only).
PACKAGES = ("contract", "aggregator", "participants", "order_saga", "trip_booking")
STATIC_PACKAGES = (*PACKAGES, "benchmarks")
#: Which packages each package may import (itself included).
MAY_IMPORT = {
    "contract": {"contract"},
    "aggregator": {"aggregator", "contract"},
    "participants": {"participants", "contract"},
    # The orchestrator derives overall states with the aggregator's rule engine, and the demo
    # runs the aggregator.
    "order_saga": {"order_saga", "participants", "aggregator", "contract"},
    # The second example is not built on the participants framework: its services speak their
    # own APIs, read through mappings; only its demo borrows the first example's local broker.
    "trip_booking": {"trip_booking", "aggregator", "contract", "order_saga"},
    "benchmarks": set(STATIC_PACKAGES),
}


def _sources(root: Path, package: str) -> dict[str, Path]:
    """``package``'s modules under ``root``: dotted name → source file (a package's is its ``__init__.py``)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _modules(package: str) -> list[str]:
    return list(_sources(ROOT, package))


MODULES = {package: _modules(package) for package in PACKAGES}
ALL = [name for names in MODULES.values() for name in names]

_DRIVER = r"""
import importlib, json, os, subprocess, sys, traceback

project = set(json.loads(sys.argv[1]))
names = json.loads(sys.stdin.read())

def ours():
    return sorted(m for m in sys.modules if m.split(".")[0] in project)

def attempt(name):
    try:
        importlib.import_module(name)
    except BaseException:
        return {"ok": False, "error": traceback.format_exc()}
    return {"ok": True, "loaded": ours()}

results = {}
if hasattr(os, "fork"):
    for lib in ("pydantic", "pydantic.main", "pydantic.type_adapter", "pydantic.json_schema", "aiohttp",
                "aiohttp.web", "aiomqtt", "cachetools", "prometheus_client", "aiohttp_sse",
                "typing_extensions", "sqlite3", "asyncio", "tomllib", "zoneinfo", "secrets", "hmac"):
        try:
            importlib.import_module(lib)
        except ImportError:
            pass
    if ours():
        raise SystemExit(f"a third-party import loaded project modules: {ours()}")
    width = max(1, os.cpu_count() or 1)
    running = []  # (name, pid, read end), oldest first

    def collect():
        name, pid, read_end = running.pop(0)
        with os.fdopen(read_end) as inp:
            text = inp.read()
        _, status = os.waitpid(pid, 0)
        results[name] = json.loads(text) if text else {"ok": False, "error": f"child died ({status})"}

    for name in names:
        if len(running) >= width:
            collect()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.dup2(2, 1)  # whatever a module prints at import goes to stderr, not into the results
            for _, _, other in running:
                os.close(other)
            result = attempt(name)
            with os.fdopen(write_end, "w") as out:
                json.dump(result, out)
            os._exit(0)
        os.close(write_end)
        running.append((name, pid, read_end))
    while running:
        collect()
else:
    child = "import json, sys\n" + "project = set(json.loads(sys.argv[1]))\n" + (
        "try:\n    __import__(sys.argv[2])\nexcept BaseException:\n    import traceback\n"
        "    print(json.dumps({'ok': False, 'error': traceback.format_exc()}))\n"
        "else:\n    print(json.dumps({'ok': True, 'loaded': sorted("
        "m for m in sys.modules if m.split('.')[0] in project)}))\n"
    )
    for name in names:
        done = subprocess.run([sys.executable, "-c", child, sys.argv[1], name], capture_output=True, text=True)
        results[name] = json.loads(done.stdout) if done.stdout else {"ok": False, "error": done.stderr}
print(json.dumps(results))
"""


def run_alone(names: list[str], project: tuple[str, ...], cwd: Path) -> dict[str, dict[str, Any]]:
    """Import each of ``names`` first and alone; for each: ok, and the ``project`` modules it loaded (or the error)."""
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(project)],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(results) == sorted(names)
    return results


@pytest.fixture(scope="module")
def imports() -> dict[str, dict[str, Any]]:
    """For each module: whether importing it first and alone worked, and which project modules it loaded."""
    return run_alone(ALL, PACKAGES, ROOT)


def _loaded(imports: dict[str, dict[str, Any]], name: str) -> list[str]:
    result = imports[name]
    if not result["ok"]:
        pytest.fail(f"importing {name} alone failed:\n{result['error']}")
    loaded: list[str] = result["loaded"]
    return loaded


def test_modules_are_discovered() -> None:
    for expected in ("contract", "contract.events", "aggregator", "aggregator._store", "participants.http"):
        assert expected in ALL
    assert "order_saga.saga" in ALL
    assert len(ALL) >= 30


@pytest.mark.parametrize("name", ALL)
@pytest.mark.slow
def test_imports_alone(imports: dict[str, dict[str, Any]], name: str) -> None:
    loaded = _loaded(imports, name)
    assert name in loaded


@pytest.mark.parametrize("name", ALL)
@pytest.mark.slow
def test_loads_only_the_packages_it_may_depend_on(imports: dict[str, dict[str, Any]], name: str) -> None:
    allowed = MAY_IMPORT[name.split(".")[0]]
    assert [m for m in _loaded(imports, name) if m.split(".")[0] not in allowed] == []


@pytest.mark.slow
def test_the_check_sees_a_dependency_where_there_is_one(imports: dict[str, dict[str, Any]]) -> None:
    """The aggregator's demo runs the framework and the aggregator: the same check must see it
    (so a pass above means something)."""
    loaded = _loaded(imports, "order_saga.aggregator_demo")
    assert {"participants", "aggregator", "contract"} <= set(loaded)
    assert "contract" in _loaded(imports, "aggregator")


def test_the_check_catches_an_import_cycle(tmp_path: Path) -> None:
    """A cycle that breaks only when one side is imported first: an import of everything at once
    (or in a lucky order) would pass; importing each module first and alone does not."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n\nA = 1\n")
    (package / "b.py").write_text("from .a import A\n\nB = A + 1\n")
    results = run_alone(["cyclic", "cyclic.b", "cyclic.a"], ("cyclic",), tmp_path)
    assert results["cyclic"] == {"ok": True, "loaded": ["cyclic"]}
    assert results["cyclic.b"] == {"ok": True, "loaded": ["cyclic", "cyclic.a", "cyclic.b"]}
    assert results["cyclic.a"]["ok"] is False
    assert "partially initialized module 'cyclic.a'" in results["cyclic.a"]["error"]


# -- the static check: every import anywhere in a module is an edge ------------------------------

#: module → {project module it imports: the first line that does}
Graph = dict[str, dict[str, int]]


def _base(name: str, is_package: bool, module: str | None, level: int) -> str:
    """The module a ``from … import`` names, a relative one resolved against the importer ``name``."""
    if level == 0:
        return module or ""
    parts = name.split(".") if is_package else name.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, module] if module else parts)


def _known(dotted: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of ``dotted`` that is a module of ``modules`` (None: not the project's)."""
    parts = dotted.split(".")
    while parts:
        if (candidate := ".".join(parts)) in modules:
            return candidate
        parts.pop()
    return None


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """Every import of every module of ``packages`` under ``root``, wherever it is in the file.

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
    No edge is added from a module to its parent package: Python initialises the parent first
    whatever the child imports, and that order cannot loop.
    """
    sources = {name: path for package in packages for name, path in _sources(root, package).items()}
    graph: Graph = {}
    for name, path in sources.items():
        is_package = path.name == "__init__.py"
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(name, is_package, node.module, node.level)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in sources else base for a in node.names]
            else:
                continue
            for target in targets:
                found = _known(target, sources)
                if found is not None and found != name:
                    edges[found] = min(edges.get(found, node.lineno), node.lineno)
        graph[name] = edges
    return graph


def a_cycle(graph: Graph, component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected ``component``: ``[a, …, a]``."""
    start = min(component)
    came_from: dict[str, str] = {}
    queue = [start]
    while queue:
        module = queue.pop(0)
        for target in sorted(graph[module]):
            if target == start:
                path = [module]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target in component and target not in came_from:
                came_from[target] = module
                queue.append(target)
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def cyclic_groups(graph: Graph) -> list[set[str]]:
    """The groups of modules that import one another, directly or not (Tarjan's strongly
    connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def describe(graph: Graph, cycle: list[str]) -> str:
    """``a (line 3) → b (line 9) → a``: where each module of ``cycle`` imports the next."""
    steps = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " → ".join([*steps, cycle[-1]])


def forbidden(graph: Graph, may_import: Mapping[str, set[str]]) -> list[str]:
    """Every import of a package its importer's package may not depend on, as ``module:line imports target``."""
    return [
        f"{module}:{line} imports {target}"
        for module, edges in sorted(graph.items())
        for target, line in sorted(edges.items())
        if target.split(".")[0] not in may_import[module.split(".")[0]]
    ]


@pytest.fixture(scope="module")
def graph() -> Graph:
    """The project's static import graph."""
    return import_graph(ROOT, STATIC_PACKAGES)


def test_no_import_cycle_even_behind_late_imports(graph: Graph) -> None:
    """No group of modules imports one another, counting imports inside functions and for typing."""
    found = cyclic_groups(graph)
    assert found == [], "modules that import one another:\n" + "\n".join(
        f"{', '.join(sorted(group))}; e.g. {describe(graph, a_cycle(graph, group))}" for group in found
    )


def test_packages_import_only_what_they_may(graph: Graph) -> None:
    """``contract`` imports no other package; ``aggregator`` and ``participants`` nothing of each
    other nor of ``order_saga``; wherever in the module the import is."""
    assert forbidden(graph, MAY_IMPORT) == []


def test_the_static_graph_has_the_edges_there_are(graph: Graph) -> None:
    """Late and package-level imports are edges (so the passes above mean something)."""
    assert set(graph) >= set(ALL)
    assert "order_saga.coordination" in graph["order_saga.cli"]  # inside a function
    assert "aggregator.definition" in graph["order_saga.coordination"]
    assert "participants" in graph["order_saga.saga"]
    assert "participants.http" in graph["participants.service"]
    assert "participants.service" not in graph["participants.http"]  # one way


def _package(root: Path, files: Mapping[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_static_check_resolves_relative_and_submodule_imports(tmp_path: Path) -> None:
    """``from . import mod`` is an edge to the submodule, ``from .. import X`` to the package."""
    _package(
        tmp_path,
        {
            "pkg/__init__.py": "from . import sub\nfrom .mod import X\n",
            "pkg/mod.py": "import os\n\nX = 1\n",
            "pkg/sub/__init__.py": "from .. import mod\nfrom ..mod import X as Y\n",
            "pkg/sub/leaf.py": "import pkg.sub\nfrom pkg import X\n\n\ndef late():\n    import pkg.mod.nothing\n",
        },
    )
    assert import_graph(tmp_path, ["pkg"]) == {
        "pkg": {"pkg.sub": 1, "pkg.mod": 2},
        "pkg.mod": {},
        "pkg.sub": {"pkg.mod": 1},
        "pkg.sub.leaf": {"pkg.sub": 1, "pkg": 2, "pkg.mod": 6},
    }


def test_the_static_check_catches_cycles_the_import_of_each_module_misses(tmp_path: Path) -> None:
    """A cycle behind a function-level import, and one behind ``TYPE_CHECKING``: each module
    imports alone fine, so only the static graph shows them."""
    _package(
        tmp_path,
        {
            "hidden/__init__.py": "",
            "hidden/a.py": "A = 1\n\n\ndef later():\n    from . import b\n\n    return b.B\n",
            "hidden/b.py": "from .a import A\n\nB = A + 1\n",
            "hidden/c.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .d import D\n\nC = 1\n",
            "hidden/d.py": "from .c import C\n\nD = C\n",
        },
    )
    results = run_alone(["hidden.a", "hidden.b", "hidden.c", "hidden.d"], ("hidden",), tmp_path)
    assert all(result["ok"] for result in results.values()), results
    graph = import_graph(tmp_path, ["hidden"])
    groups = sorted(cyclic_groups(graph), key=min)
    assert groups == [{"hidden.a", "hidden.b"}, {"hidden.c", "hidden.d"}]
    assert describe(graph, a_cycle(graph, groups[0])) == "hidden.a (line 5) → hidden.b (line 1) → hidden.a"
    assert a_cycle(graph, groups[1]) == ["hidden.c", "hidden.d", "hidden.c"]


def test_the_static_check_catches_a_late_import_against_the_layering(tmp_path: Path) -> None:
    """An import of a package one must not depend on, made inside a function, is still one."""
    _package(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/core.py": "def helper():\n    from high.app import run\n\n    return run\n",
            "high/__init__.py": "",
            "high/app.py": "from low import core\n\nrun = core\n",
        },
    )
    graph = import_graph(tmp_path, ["low", "high"])
    assert forbidden(graph, {"low": {"low"}, "high": {"high", "low"}}) == ["low.core:2 imports high.app"]


def test_test_modules_share_helpers_through_support_only() -> None:
    """A test module imports no other test module nor a conftest: shared helpers live in
    ``tests/support.py`` (or a package's own ``_name.py``), so running one test file never
    depends on another's fixtures or side effects."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                names = [node.module or ""] + [alias.name for alias in node.names if not node.module]
                last = [name.rsplit(".", 1)[-1] for name in names]
                if any(n.startswith("test_") or n == "conftest" for n in last):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
