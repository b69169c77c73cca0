"""``python -m trip_booking serve NAME [options]`` runs one service; ``python -m trip_booking demo``
runs a broker, the four services and the aggregator, and books one trip per outcome."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from contract import BrokerURL, ContractError, wait_for_stop_signal
from contract.cli import (
    DEFAULT_BROKER,
    add_log_level,
    config_error,
    configure_logging,
    serve_until_stopped,
)

from . import PORTS

PROG = "python -m trip_booking"
log = logging.getLogger("trip_booking")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error: one line on stderr, exit status 2."""
        self.exit(2, f"{PROG}: {message}\n")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (0-65535)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("name", choices=list(PORTS), metavar="NAME", help="one of: " + ", ".join(PORTS))
    serve.add_argument(
        "--port",
        type=_port,
        help="HTTP port (default: " + ", ".join(f"{n} {p}" for n, p in PORTS.items()) + ")",
    )
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    serve.add_argument(
        "--broker", default=DEFAULT_BROKER, metavar="URL", help=f"MQTT broker (default {DEFAULT_BROKER})"
    )
    serve.add_argument(
        "--db", type=Path, metavar="PATH", help="SQLite database (default ./trip-NAME.sqlite3)"
    )
    add_log_level(serve)
    demo = commands.add_parser(
        "demo", help="a broker, the four services and the aggregator, one trip per outcome"
    )
    demo.add_argument("--once", action="store_true", help="exit after the four trips (0: all as expected)")
    demo.add_argument("--broker", metavar="URL", help="MQTT broker URL (default: start a private one)")
    demo.add_argument("--port", type=_port, default=8100, help="the aggregator's HTTP port (default 8100)")
    demo.add_argument(
        "--freshness", choices=["on-demand", "ttl", "events"], default="events", help="(default events)"
    )
    add_log_level(demo, default="WARNING")
    return parser


async def _serve(args: argparse.Namespace, broker: BrokerURL, port: int, db: Path) -> None:
    from .flights import Flights
    from .hotel import Hotel
    from .payments import Payments
    from .trips import Trips

    kind = {"trips": Trips, "flights": Flights, "hotel": Hotel, "payments": Payments}[args.name]
    service = kind(db=db, broker=broker)
    async with service.running(args.host, port) as url:
        log.info("%s serving on %s (broker %s)", args.name, url, broker)
        await wait_for_stop_signal()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        broker = BrokerURL.parse(args.broker) if args.broker else None
    except ContractError as exc:
        return config_error(PROG, exc)
    if args.command == "demo":
        from .demo import main as demo

        return demo(broker=broker, port=args.port, once=args.once, freshness=args.freshness, prog=PROG)
    assert broker is not None
    port = PORTS[args.name] if args.port is None else args.port
    db = args.db or Path(f"trip-{args.name}.sqlite3")
    try:
        return serve_until_stopped(_serve(args, broker, port, db), prog=PROG, address=f"{args.host}:{port}")
    except sqlite3.Error as exc:
        return config_error(PROG, f"cannot use the database {db}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
