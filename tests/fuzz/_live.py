"""Real servers on an event loop of their own, for tests whose client side blocks.

schemathesis sends its requests with ``requests``: a server on the test's own event loop would
never answer them. :func:`live_servers` runs the four participants (in-process, each on port 0,
on the given broker and prefix) and two aggregators over them (auth off, and auth on) on a loop
in a background thread, and stops them all on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract import BrokerURL
from order_saga import SAMPLES

from ..support import in_process_saga, serve_aggregator

#: The bearer token of the aggregator that requires one.
TOKEN = "fuzz-Token_0123456789"
#: Workflows placed before the fuzzing starts, so that generated reads also find records.
SEEDED = {"happy": "fz-happy", "declined": "fz-declined", "unshippable": "fz-unshippable"}


@dataclass
class LiveServers:
    """Base URLs of the servers running in the background thread."""

    participants: dict[str, str] = field(default_factory=dict)
    aggregator: str = ""
    aggregator_auth: str = ""


@contextlib.contextmanager
def live_servers(broker: BrokerURL, prefix: str, tmp: Path, **settings: Any) -> Iterator[LiveServers]:
    """The participants (with :data:`SEEDED` placed and finished) and both aggregators, until exit."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    failures: list[BaseException] = []
    live = LiveServers()

    async def main() -> None:
        async with (
            in_process_saga(broker, prefix, tmp) as saga,
            serve_aggregator(saga.urls, **settings) as plain,
            serve_aggregator(saga.urls, token=TOKEN, **settings) as guarded,
        ):
            for outcome, workflow_id in SEEDED.items():
                await saga.place(outcome, order_id=workflow_id)
            for outcome, workflow_id in SEEDED.items():
                await saga.wait_states(workflow_id, SAMPLES[outcome].parts)
            live.participants = dict(saga.urls)
            live.aggregator, live.aggregator_auth = plain.url, guarded.url
            started.set()
            await stop.wait()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)
        finally:
            started.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="fuzz-live-servers", daemon=True)
    thread.start()
    try:
        if not started.wait(60) or failures:
            raise RuntimeError("the live servers did not start") from (failures[0] if failures else None)
        yield live
    finally:
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                loop.call_soon_threadsafe(stop.set)
            thread.join(30)
        assert not thread.is_alive(), "the live servers did not stop within 30 s"
        if failures:
            raise RuntimeError("a live server failed") from failures[0]


def post_order(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """Status, content type and body of ``POST {url}/orders``, from a blocking client."""
    request = urllib.request.Request(f"{url}/orders", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()
