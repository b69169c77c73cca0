"""The aggregator command line, run as real processes: serve, get, demo --once, and bad configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker, free_port

from ..support import aggregator_process, cli, process_saga


@pytest.mark.slow
async def test_serve_and_get_show_every_saga_outcome(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Participants and aggregator started only through their CLIs give the right views."""
    async with process_saga(session_broker.url, prefix, tmp_path) as (saga, procs):
        placed = {o: await saga.place(o) for o in sorted(SAMPLES)}
        for outcome, wf in placed.items():
            await saga.wait_states(wf, SAMPLES[outcome].parts)
        overrides = [arg for name, p in procs.items() for arg in ("--participant", f"{name}={p.url}")]
        async with aggregator_process(*overrides) as url:
            for outcome, wf in placed.items():
                async with saga.http.get(f"{url}/workflows/{wf}") as r:
                    view = await r.json()
                assert view["state"] == SAMPLES[outcome].state
                assert {n: p["state"] for n, p in view["parts"].items()} == SAMPLES[outcome].parts
            code, out = await cli("get", placed["unshippable"], "--url", url)
            assert code == 0
            assert "COMPENSATED" in out
            assert "RELEASED" in out and "shipping" in out
            code, out = await cli("get", "no-such-order", "--url", url)
            assert code == 1
            assert "404" in out
            procs["payment"].kill()
            async with saga.http.get(f"{url}/workflows/{placed['happy']}") as r:
                degraded = await r.json()
            assert r.status == 200
            assert degraded["complete"] is False
            assert degraded["parts"]["payment"]["error"] == "unavailable"


@pytest.mark.slow
async def test_get_against_nothing_exits_2_with_a_message() -> None:
    """No aggregator listening: exit 2 and a one-line reason, no traceback."""
    code, out = await cli("get", "ord-1", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 2
    assert "cannot get" in out
    assert "Traceback" not in out


@pytest.mark.broker  # the demo starts its own
@pytest.mark.slow
async def test_demo_once_exits_0_when_every_sample_ends_as_expected() -> None:
    """The one-command demo: broker, participants, aggregator, four sample orders."""
    code, out = await cli("demo", "--once")
    assert code == 0, out
    assert out.count("ok  ") == 4
    for state in ("COMPLETED", "FAILED", "COMPENSATED"):
        assert state in out


@pytest.mark.slow
async def test_bad_configuration_exits_2_naming_the_problem(tmp_path: Path) -> None:
    """A broken definition file or override is reported with file and field, exit status 2."""
    bad = tmp_path / "wf.toml"
    bad.write_text(
        'name = "x"\n[participants.a]\nurl = "http://127.0.0.1:1"\ntimeout_ms = "slow"\n[[rules]]\nstate = "S"\n'
    )
    code, out = await cli("serve", "--config", str(bad))
    assert code == 2
    assert f"{bad}: participants.a.timeout_ms" in out
    assert "Traceback" not in out
    code, out = await cli("serve", "--participant", "billing=http://127.0.0.1:1")
    assert code == 2
    assert "unknown participant" in out
    code, out = await cli("serve", "--participant", "payment")
    assert code == 2
    assert "NAME=URL" in out
