"""``python -m trip_booking demo``: an MQTT broker, the four trip services (as processes) and the
aggregator reading them through ``trip.toml``'s mappings, with one trip per outcome, each shown
as the aggregator reconstructs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp

from aggregator import Aggregator
from aggregator.cli_get import render, wait_for_state
from aggregator.definition import Freshness, load_definition
from aggregator.errors import AggregatorError
from aggregator.web import create_app
from contract import BrokerURL, run, serve_app, wait_for_stop_signal
from order_saga.broker import free_port
from order_saga.embedded_broker import local_broker

from . import PORTS

#: One trip per outcome: its request, and the overall state its view ends in.
TRIPS: dict[str, tuple[dict[str, Any], str]] = {
    "trip-ok": ({"travellers": 2, "nights": 3, "amount": 420.5}, "BOOKED"),
    "trip-no-flight": ({"travellers": 10, "nights": 3, "amount": 900}, "CANCELLED"),
    "trip-no-room": ({"travellers": 2, "nights": 15, "amount": 900}, "CANCELLED"),
    "trip-declined": ({"travellers": 2, "nights": 3, "amount": 6000}, "CANCELLED"),
}
#: How long the services may take to subscribe, and a trip's view to reach its state.
READY_TIMEOUT_S = 30.0
VIEW_TIMEOUT_S = 15.0


@contextlib.contextmanager
def services(broker: BrokerURL, data: Path) -> Iterator[dict[str, str]]:
    """The four services as ``python -m trip_booking serve`` processes on free ports; always stopped."""
    procs: list[subprocess.Popen[bytes]] = []
    urls = {}
    try:
        for name in PORTS:
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            with (data / f"{name}.log").open("wb") as log:
                argv = [
                    "serve",
                    name,
                    "--port",
                    str(port),
                    "--broker",
                    str(broker),
                    "--db",
                    str(data / f"{name}.sqlite3"),
                ]
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "trip_booking", *argv],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _wait_subscribed(http: aiohttp.ClientSession, urls: dict[str, str], data: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    for name, url in urls.items():
        while True:
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200 and (await resp.json())["subscribed"]:
                        break
            if time.monotonic() > deadline:
                said = (data / f"{name}.log").read_text(errors="replace").strip().splitlines()
                last = f" (its last log line: {said[-1]})" if said else ""
                raise RuntimeError(f"{name} did not subscribe within {READY_TIMEOUT_S:.0f}s{last}")
            await asyncio.sleep(0.05)


async def run_demo(
    *, broker: BrokerURL | None, port: int, once: bool, freshness: Freshness = "events"
) -> int:
    """Start everything, book the trips, print their views; serve until Ctrl-C unless ``once``."""
    async with contextlib.AsyncExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trip-demo-")))
        url = await stack.enter_async_context(local_broker(broker))
        urls = stack.enter_context(services(url, data))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        await _wait_subscribed(http, urls, data)
        path = stack.enter_context(resources.as_file(resources.files("trip_booking") / "trip.toml"))
        definition = load_definition(path).with_urls(urls).with_settings(freshness=freshness)
        agg = await stack.enter_async_context(Aggregator(definition, broker=url, prefix="saga"))
        if agg.feed is not None:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await agg.feed.up.wait()
        base = await stack.enter_async_context(serve_app(create_app(agg), "127.0.0.1", 0 if once else port))
        print(f"broker     {url}")
        for name, service_url in urls.items():
            print(f"{name:<10} {service_url}")
        print(f"aggregator {base}  ({freshness})\n")
        for trip_id, (request, _) in TRIPS.items():
            async with http.post(f"{urls['trips']}/trips", json={"trip_id": trip_id, **request}) as resp:
                if resp.status != 201:
                    print(f"FAIL booking {trip_id}: {resp.status} {await resp.text()}")
                    return 1
        ok = True
        for trip_id, (_, state) in TRIPS.items():
            view = await wait_for_state(http, f"{base}/workflows/{trip_id}", state, VIEW_TIMEOUT_S)
            good = view is not None and view["state"] == state and bool(view["complete"])
            ok &= good
            print(("ok  " if good else "FAIL") + f" {trip_id}: expected {state}")
            print(render(view) if view else "    (no view)", end="\n\n", flush=True)
        if once:
            return 0 if ok else 1
        print(f"Open: {base}/ui/?id=trip-declined   (the status page)")
        print(f"Try:  python -m aggregator get trip-ok --url {base}")
        print(f"      curl -s {base}/workflows/trip-no-room")
        print(f"      curl -s {urls['hotel']}/hotel/reservations/trip-declined")
        print(f"      curl -s '{urls['flights']}/flights/bookings?trip=trip-ok,trip-no-room'")
        print(f"      curl -s -XPOST {urls['trips']}/trips -H 'content-type: application/json' \\")
        print('        -d \'{"travellers": 2, "nights": 4, "amount": 800}\'')
        print("Ctrl-C to stop.", flush=True)
        await wait_for_stop_signal()
        return 0
    raise AssertionError("unreachable")  # pragma: no cover - the block returns


def main(*, broker: BrokerURL | None, port: int, once: bool, freshness: Freshness, prog: str) -> int:
    """Run :func:`run_demo`; exit status 1 with one line on stderr when it cannot start, 130 at Ctrl-C."""
    try:
        return run(run_demo(broker=broker, port=port, once=once, freshness=freshness))
    except KeyboardInterrupt:
        return 130
    except (OSError, RuntimeError, AggregatorError) as exc:
        print(f"{prog}: demo failed: {exc}", file=sys.stderr)
        return 1
