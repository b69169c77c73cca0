"""A FastAPI gateway that embeds the aggregator next to its own routes.

    python examples/fastapi_gateway.py --participant order=http://127.0.0.1:8001 ... --port 8080
    curl localhost:8080/status/workflows/ord-42
    curl localhost:8080/hello

    python examples/fastapi_gateway.py --demo [--once]

With ``--demo`` it starts the example order saga first (an MQTT broker and its four
participants, as ``python -m aggregator demo`` does; the ``demo`` extra), places one order per
way the saga can end and shows each view as the gateway serves it; ``--once`` then stops.

The aggregator's API (``aggregator.asgi.create_app``) is mounted under ``/status``; the
aggregator itself is opened in the gateway's lifespan, so it lives exactly as long as the
gateway serves. uvicorn runs it on uvloop with httptools; on Ctrl-C or SIGTERM the open watch
streams end at once, since uvicorn waits for open responses before it runs the lifespan's
shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from types import FrameType

import aiohttp
import uvicorn
from fastapi import FastAPI

import aggregator.asgi
from aggregator import Aggregator, Definition, load_definition
from contract.serving import run


def build_gateway(definition: Definition, *, prefix: str = "/status", token: str | None = None) -> FastAPI:
    """The gateway app: its own routes, plus the aggregator mounted under ``prefix``
    (``app.state.aggregator``; ``app.state.status`` is the mounted app)."""
    agg = Aggregator(definition)
    gateway = FastAPI(title="gateway", lifespan=aggregator.asgi.lifespan(agg))
    gateway.state.aggregator = agg
    gateway.state.status = aggregator.asgi.create_app(agg, token=token)
    aggregator.asgi.mount(gateway, prefix, gateway.state.status)  # gateway.mount, line breaks too

    @gateway.get("/hello")
    async def hello() -> dict[str, str]:
        """One of the gateway's own routes."""
        return {"gateway": "hello"}

    return gateway


class GatewayServer(uvicorn.Server):
    """uvicorn's server, which ends the aggregator's watch streams as soon as it is told to stop."""

    def __init__(self, config: uvicorn.Config, gateway: FastAPI) -> None:
        super().__init__(config)
        self.gateway = gateway

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        aggregator.asgi.stop_streams(self.gateway.state.status)
        super().handle_exit(sig, frame)


async def demo(*, port: int, once: bool, token: str | None) -> int:
    """The example saga's broker and participants, the gateway in front of them, one order per
    outcome shown through the gateway; then serve until stopped, unless ``once``."""
    from order_saga.aggregator_demo import show_samples  # the demo extra's example saga
    from order_saga.demo import local_saga

    async with local_saga() as saga:
        definition = load_definition().with_urls({name: svc.url for name, svc in saga.services.items()})
        gateway = build_gateway(definition, token=token)
        config = uvicorn.Config(
            gateway, host="127.0.0.1", port=0 if once else port, http="httptools", log_level="warning"
        )
        server = GatewayServer(config, gateway)

        async def serve() -> None:
            with contextlib.suppress(SystemExit):  # uvicorn's word for "could not start", logged
                await server.serve()

        serving = asyncio.create_task(serve())
        while not server.started:
            if serving.done():  # the port is taken, or the aggregator did not open
                return 1
            await asyncio.sleep(0.01)
        root = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        print(f"gateway    {root}  (its own route: {root}/hello)")
        print(f"aggregator {root}/status  (mounted)\n")
        try:
            async with aiohttp.ClientSession() as http:  # the token for the gateway only, not the saga
                ok = await show_samples(http, saga, f"{root}/status", headers)
            if once:
                return 0 if ok else 1
            print(f"Open: {root}/status/ui/?id=demo-unshippable   (the status page under the mount)")
            print(f"Try:  curl -s {root}/status/workflows/demo-happy")
            print(f"      curl -sN {root}/status/workflows/demo-happy/watch   (Server-Sent Events)")
            print("Ctrl-C to stop.", flush=True)
            await asyncio.shield(serving)
            return 0
        finally:
            # Stopped as a signal would stop it, but without one: uvicorn raises the signals it
            # was given again once it has stopped, which would end this process before the saga
            # is closed and with status 0 whatever the samples showed.
            aggregator.asgi.stop_streams(gateway.state.status)
            server.should_exit = True
            await serving


def main() -> None:
    """Run the gateway from the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--participant", action="append", default=[], metavar="NAME=URL")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--config", help="workflow definition (TOML); default: the packaged example saga")
    parser.add_argument("--token", help="bearer token the aggregator's routes require")
    parser.add_argument(
        "--demo", action="store_true", help="start the example saga's broker and participants too"
    )
    parser.add_argument("--once", action="store_true", help="with --demo: show the sample orders, then stop")
    args = parser.parse_args()
    if args.demo and (args.participant or args.config):
        parser.error("--demo starts its own participants: give no --participant or --config with it")
    if args.once and not args.demo:
        parser.error("--once goes with --demo")
    # Once stopped, uvicorn raises the stop signal again for the handler it found: Python's
    # default would end the process by SIGTERM after a clean stop. Stop as on Ctrl-C instead.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.demo:
        code = 0
        with contextlib.suppress(KeyboardInterrupt):
            code = run(demo(port=args.port, once=args.once, token=args.token))
        sys.exit(code)
    definition = load_definition(args.config).with_urls(dict(p.split("=", 1) for p in args.participant))
    gateway = build_gateway(definition, token=args.token)
    config = uvicorn.Config(gateway, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools")
    server = GatewayServer(config, gateway)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(1)  # it could not start (the port is taken, the aggregator did not open)


if __name__ == "__main__":
    main()
