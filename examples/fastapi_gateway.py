"""A FastAPI gateway that embeds the aggregator next to its own routes.

    python examples/fastapi_gateway.py --participant order=http://127.0.0.1:8001 ... --port 8080
    curl localhost:8080/status/workflows/ord-42
    curl localhost:8080/hello

The aggregator's API (``aggregator.asgi.create_app``) is mounted under ``/status``; the
aggregator itself is opened in the gateway's lifespan, so it lives exactly as long as the
gateway serves. uvicorn runs it on uvloop with httptools; on Ctrl-C or SIGTERM the open watch
streams end at once, since uvicorn waits for open responses before it runs the lifespan's
shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

import aggregator.asgi
from aggregator import Aggregator, Definition, load_definition


def build_gateway(definition: Definition, *, prefix: str = "/status", token: str | None = None) -> FastAPI:
    """The gateway app: its own routes, plus the aggregator mounted under ``prefix``
    (``app.state.aggregator``; ``app.state.status`` is the mounted app)."""
    agg = Aggregator(definition)
    gateway = FastAPI(title="gateway", lifespan=aggregator.asgi.lifespan(agg))
    gateway.state.aggregator = agg
    gateway.state.status = aggregator.asgi.create_app(agg, token=token)
    gateway.mount(prefix, gateway.state.status)

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


def main() -> None:
    """Run the gateway from the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--participant", action="append", default=[], metavar="NAME=URL")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--config", help="workflow definition (TOML); default: the packaged example saga")
    parser.add_argument("--token", help="bearer token the aggregator's routes require")
    args = parser.parse_args()
    definition = load_definition(args.config).with_urls(dict(p.split("=", 1) for p in args.participant))
    gateway = build_gateway(definition, token=args.token)
    config = uvicorn.Config(gateway, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools")
    server = GatewayServer(config, gateway)
    # Once stopped, uvicorn raises the stop signal again for the handler it found: Python's
    # default would end the process by SIGTERM after a clean stop. Stop as on Ctrl-C instead.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(1)  # it could not start (the port is taken, the aggregator did not open)


if __name__ == "__main__":
    main()
