"""``python -m aggregator demo``: an MQTT broker, the four participants and the aggregator in one
command, with one sample order per saga outcome, each shown as the aggregator reconstructs it.

The aggregator finds it through the entry point ``demo`` of the group ``saga_aggregator.commands``
(see pyproject.toml): the aggregator itself imports nothing of the example.
"""

from __future__ import annotations

import aiohttp

from aggregator import Aggregator
from aggregator.cli_get import render, wait_for_state
from aggregator.definition import Freshness, load_definition
from aggregator.web import create_app
from contract import BrokerURL, serve_app, wait_for_stop_signal

from .demo import LocalSaga, local_saga
from .samples import SAMPLES


async def run_demo(
    *, broker: BrokerURL | None, port: int, once: bool, freshness: Freshness = "on-demand"
) -> int:
    """Start everything, place the samples, print their views; serve until Ctrl-C unless ``once``."""
    async with local_saga(broker=broker) as saga:
        definition = (
            load_definition()
            .with_urls({name: svc.url for name, svc in saga.services.items()})
            .with_settings(freshness=freshness)
        )
        async with (
            Aggregator(definition, broker=saga.broker, prefix=saga.prefix) as agg,
            aiohttp.ClientSession() as http,
            serve_app(create_app(agg), "127.0.0.1", 0 if once else port) as base,
        ):
            print(f"broker     {saga.broker}")
            for name, svc in saga.services.items():
                print(f"{name:<10} {svc.url}")
            if once:  # the server stops with the script: no link to a page that will be gone
                print(f"aggregator {base}  ({freshness}; until the samples are done)\n")
            else:
                print(f"aggregator {base}  ({freshness})")
                print(f"status page {base}/ui/  (open {base}/ui/?id=demo-unshippable)\n")
            ok = await show_samples(http, saga, base)
            if once:
                return 0 if ok else 1
            print(f"Open: {base}/ui/?id=demo-unshippable   (the status page: parts, timeline, live)")
            print(f"Try:  python -m aggregator get demo-happy --url {base}")
            print(f"      curl -s {base}/workflows/demo-unshippable/timeline")
            print(f"      curl -s {base}/workflows/demo-unshippable")
            print(f"      curl -sN {base}/workflows/demo-happy/watch   (Server-Sent Events)")
            print(
                f"      curl -s -XPOST {saga.services['order'].url}/orders -H 'content-type: application/json' \\"
            )
            print(
                '        -d \'{"amount": 12, "currency": "EUR", "items": [{"sku": "A-1", "qty": 1}], "country": "FR"}\''
            )
            print("Ctrl-C to stop.", flush=True)
            await wait_for_stop_signal()
            return 0


async def show_samples(
    http: aiohttp.ClientSession, saga: LocalSaga, base: str, headers: dict[str, str] | None = None
) -> bool:
    """Place one order per saga outcome, then print each one's view as the aggregator at ``base``
    reconstructs it once it has ended (asked with ``headers``: a token, say); True when every one
    ended as expected."""
    ok = True
    for outcome, sample in SAMPLES.items():
        body = sample.body(order_id=f"demo-{outcome}")
        async with http.post(f"{saga.services['order'].url}/orders", json=body) as resp:
            assert resp.status == 202, await resp.text()
    for outcome, sample in SAMPLES.items():
        view = await wait_for_state(http, f"{base}/workflows/demo-{outcome}", sample.state, 15, headers)
        good = view is not None and view["state"] == sample.state
        ok &= good
        print(("ok  " if good else "FAIL") + f" {outcome}: expected {sample.state}")
        print(render(view) if view else "    (no view)", end="\n\n")
    return ok
