"""The aggregator's ASGI application on uvicorn, for :mod:`benchmarks.asgi`:
``python -m benchmarks._asgi_serve --port P [--participant NAME=URL …] [--freshness MODE]
[--broker URL --prefix P]``.

The packaged order-saga definition (what ``python -m aggregator serve`` without ``--config``
reads) with these participant URLs and freshness, an :class:`~aggregator.Aggregator` opened and
closed by the application's own lifespan (``create_app(agg, manage=True)``), one uvicorn worker
on uvloop with the httptools parser, no access log. The collector's thresholds are those
:func:`contract.run` gives ``python -m aggregator serve``, so that the two servers differ only
in the HTTP server and framework around the aggregator.
"""

from __future__ import annotations

import argparse
import gc

import uvicorn

from aggregator import Aggregator, load_definition
from aggregator.asgi import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._asgi_serve", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--participant", action="append", default=[], metavar="NAME=URL")
    parser.add_argument("--freshness", choices=["on-demand", "ttl", "events"])
    parser.add_argument("--broker", help="the MQTT broker for --freshness events")
    parser.add_argument("--prefix", default="saga")
    args = parser.parse_args()
    definition = load_definition()
    urls = dict(item.split("=", 1) for item in args.participant)
    if urls:
        definition = definition.with_urls(urls)
    if args.freshness:
        definition = definition.with_settings(freshness=args.freshness)
    agg = Aggregator(definition, broker=args.broker, prefix=args.prefix)
    gc.set_threshold(20_000, 20, 20)  # as contract.run does for every server of the project
    uvicorn.run(
        create_app(agg, manage=True),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
