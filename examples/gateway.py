"""An API gateway that embeds the aggregator next to its own routes.

    python examples/gateway.py --participant order=http://127.0.0.1:8001 ... --port 8080
    curl localhost:8080/status-api/workflows/ord-42
    curl localhost:8080/hello

The aggregator's API is mounted under ``/status-api`` with ``add_subapp``; the aggregator itself
is opened in the gateway's ``cleanup_ctx``, so it lives exactly as long as the gateway serves.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from aiohttp import web

from aggregator import Aggregator, Definition, load_definition
from aggregator.web import create_app

AGG = web.AppKey("aggregator", Aggregator)


async def hello(request: web.Request) -> web.Response:
    """One of the gateway's own routes."""
    return web.json_response({"gateway": "hello"})


def build_gateway(definition: Definition, *, prefix: str = "/status-api") -> web.Application:
    """The gateway app: its own routes, plus the aggregator mounted under ``prefix``."""
    gateway = web.Application()
    gateway.router.add_get("/hello", hello)
    agg = Aggregator(definition)
    gateway[AGG] = agg
    gateway.add_subapp(prefix, create_app(agg))

    async def aggregator_ctx(app: web.Application) -> AsyncIterator[None]:
        async with agg:  # open while the gateway serves, closed on its shutdown
            yield

    gateway.cleanup_ctx.append(aggregator_ctx)
    return gateway


def main() -> None:
    """Run the gateway from the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--participant", action="append", default=[], metavar="NAME=URL")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    definition = load_definition().with_urls(dict(p.split("=", 1) for p in args.participant))
    web.run_app(build_gateway(definition), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
