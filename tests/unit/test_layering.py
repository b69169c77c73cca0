"""Layering: every module imports alone in a fresh interpreter (no import cycles), and the
packages depend one way only: ``contract`` on neither, ``aggregator`` not on ``participants``.

One driver process imports the project's third-party libraries (pydantic, aiohttp, ...) and
*none* of the project's modules, then forks one child per module; each child is thus the first
to import anything of the project, exactly as ``python -c "import X"`` would be, at a fraction
of the cost. Where ``os.fork`` is missing, each module gets its own ``python -c`` instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contract", "aggregator", "participants")
#: The demo wires the aggregator to the example participants: it may import them.
MAY_IMPORT_PARTICIPANTS = {"aggregator.demo"}


def _modules(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        found.append(".".join(parts))
    return found


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
    for expected in ("contract", "contract.events", "aggregator", "aggregator._store", "participants.saga"):
        assert expected in ALL
    assert len(ALL) >= 30


@pytest.mark.parametrize("name", ALL)
def test_imports_alone(imports: dict[str, dict[str, Any]], name: str) -> None:
    loaded = _loaded(imports, name)
    assert name in loaded


@pytest.mark.parametrize("name", [n for n in MODULES["contract"]])
def test_contract_depends_on_no_other_package(imports: dict[str, dict[str, Any]], name: str) -> None:
    others = [m for m in _loaded(imports, name) if m.split(".")[0] in ("aggregator", "participants")]
    assert others == []


@pytest.mark.parametrize("name", [n for n in MODULES["aggregator"] if n not in MAY_IMPORT_PARTICIPANTS])
def test_aggregator_loads_no_participants(imports: dict[str, dict[str, Any]], name: str) -> None:
    participants = [m for m in _loaded(imports, name) if m.split(".")[0] == "participants"]
    assert participants == []


def test_the_check_sees_a_dependency_where_there_is_one(imports: dict[str, dict[str, Any]]) -> None:
    """The demo imports the participants: the same check must see it (so a pass above means something)."""
    assert "participants" in _loaded(imports, "aggregator.demo")
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
