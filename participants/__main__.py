"""``python -m participants NAME [options]``: run one saga participant (DESIGN.md §4)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import BrokerURL, ParticipantConfig, StatusFaults
from .errors import ConfigError
from .saga import DEFAULT_PORTS, SPECS
from .service import ParticipantService
from .spec import Settings

log = logging.getLogger("participants")


def build_parser() -> argparse.ArgumentParser:
    """The §4 command line (plus a few knobs of the example saga)."""
    p = argparse.ArgumentParser(
        prog="python -m participants",
        description="Run one participant of the example order saga.",
    )
    p.add_argument("name", choices=list(SPECS), metavar="NAME", help="one of: " + ", ".join(SPECS))
    p.add_argument(
        "--port",
        type=int,
        help="HTTP port (default: order 8001, payment 8002, inventory 8003, shipping 8004)",
    )
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    p.add_argument(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        help="MQTT broker URL (default mqtt://127.0.0.1:1883)",
    )
    p.add_argument("--prefix", default="saga", help="topic prefix (default saga)")
    p.add_argument("--db", type=Path, help="SQLite file (default .saga-data/NAME.sqlite3)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay added to status endpoints")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="± random spread of that delay")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of status requests answered 503")
    p.add_argument(
        "--slow-rate", type=float, default=0.0, help="share of status requests slowed by --slow-ms"
    )
    p.add_argument("--slow-ms", type=float, default=0.0, help="extra delay of those slow requests")
    p.add_argument("--payment-limit", type=float, default=1000.0, help="payment declines amounts above this")
    p.add_argument("--initial-stock", type=int, default=10_000, help="inventory's stock of each new sku")
    p.add_argument("--client-id", help="MQTT client id (default: made once and kept in the database)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def config_from_args(args: argparse.Namespace) -> ParticipantConfig:
    """Validate the parsed options into a :class:`ParticipantConfig` (raises :class:`ConfigError`)."""
    if args.initial_stock < 0:
        raise ConfigError(f"--initial-stock must be >= 0 (got {args.initial_stock})")
    if not args.payment_limit >= 0:
        raise ConfigError(f"--payment-limit must be >= 0 (got {args.payment_limit})")
    return ParticipantConfig(
        host=args.host,
        port=DEFAULT_PORTS[args.name] if args.port is None else args.port,
        broker=BrokerURL.parse(args.broker),
        prefix=args.prefix,
        db=args.db or Path(".saga-data") / f"{args.name}.sqlite3",
        client_id=args.client_id,
        faults=StatusFaults(
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            error_rate=args.error_rate,
            slow_rate=args.slow_rate,
            slow_ms=args.slow_ms,
        ),
        settings=Settings(payment_limit=args.payment_limit, initial_stock=args.initial_stock),
    )


async def serve(name: str, config: ParticipantConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ParticipantService(SPECS[name], config=config) as service:
        print(
            f"{name}: listening on {service.url}, broker {config.broker}, prefix {config.prefix!r}",
            flush=True,
        )
        await stop.wait()
    log.info("%s: stopped", name)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mqtt").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(args.name, config))
    except OSError as exc:
        print(f"{args.name}: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
