"""The seams through which the aggregator's and the framework's command lines find the example
saga: entry points, never imports."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

import aggregator.__main__ as aggregator_cli
import participants.__main__ as participants_cli
from order_saga.aggregator_demo import run_demo
from order_saga.cli import CATALOG
from participants.cli import Catalog


def test_the_demo_command_is_the_example_saga_s() -> None:
    """``python -m aggregator demo`` runs ``order_saga.aggregator_demo.run_demo``."""
    assert aggregator_cli.installed_command("demo") is run_demo
    assert aggregator_cli.installed_command("no-such-command") is None


def test_the_example_saga_is_the_installed_participant_catalog() -> None:
    """``python -m participants NAME`` runs the example saga's catalog."""
    assert participants_cli.installed_catalogs() == [CATALOG]
    assert list(CATALOG.ports) == ["order", "payment", "inventory", "shipping", "orchestrator"]


def test_a_missing_demo_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the example installed, ``demo`` says so in one line, with no traceback."""
    monkeypatch.setattr(aggregator_cli, "installed_command", lambda name: None)
    assert aggregator_cli.main(["demo", "--once"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "demo" in lines[0] and "saga_aggregator.commands" in lines[0]


def test_no_installed_catalog_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a catalog, ``python -m participants payment`` says so in one line."""
    monkeypatch.setattr(participants_cli, "installed_catalogs", list)
    assert participants_cli.main(["payment"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "saga_participants.catalogs" in lines[0]


def test_the_catalog_naming_the_participant_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several catalogs, the one that names the participant is chosen."""
    other = Catalog(description="another saga", ports={"billing": 9001}, specs={})
    chosen: list[Catalog] = []

    def run(catalog: Catalog, argv: list[str]) -> int:
        chosen.append(catalog)
        return 0

    monkeypatch.setattr(participants_cli, "installed_catalogs", lambda: [other, CATALOG])
    monkeypatch.setattr(participants_cli, "run_catalog", run)
    assert participants_cli.main(["payment", "--port", "0"]) == 0
    assert participants_cli.main(["billing"]) == 0
    assert chosen == [CATALOG, other]


def test_an_entry_point_that_does_not_load_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stale install (the entry point names a module that is gone): one line naming it, exit 2."""
    gone = EntryPoint("demo", "no_such_module_here:run_demo", aggregator_cli.COMMANDS)
    monkeypatch.setattr(aggregator_cli, "entry_points", lambda **_: [gone])
    assert aggregator_cli.main(["demo", "--once"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no_such_module_here" in lines[0], lines

    broken = EntryPoint("broken", "no_such_module_here:CATALOG", participants_cli.CATALOGS)
    monkeypatch.setattr(participants_cli, "entry_points", lambda **_: [broken])
    assert participants_cli.main(["payment"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no_such_module_here" in lines[0], lines

    not_a_catalog = EntryPoint("odd", "order_saga.cli:PORTS", participants_cli.CATALOGS)
    monkeypatch.setattr(participants_cli, "entry_points", lambda **_: [not_a_catalog])
    assert participants_cli.main(["payment"]) == 2
    assert "is not a Catalog" in capsys.readouterr().err
