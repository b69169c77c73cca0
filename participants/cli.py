"""The command line that runs one participant (docs/design.md, "Participants").

A :class:`Catalog` names the participants one command line runs, with their default ports and
specs; :func:`main` parses, validates and serves. The options common to every participant come
first; a participant's own settings (see :mod:`participants.spec`) add theirs, so
``python -m participants payment --help`` lists ``--payment-limit`` and
``python -m participants order --help`` does not. ``python -m participants`` finds the
installed catalogs through an entry point group (:mod:`participants.__main__`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import HEAD_TIMEOUT_S, BrokerURL, ContractError, tracing, wait_for_stop_signal
from contract.cli import (
    DEFAULT_BROKER,
    Parser,
    add_broker_options,
    add_log_level,
    config_error,
    configure_logging,
    port_number,
    serve_until_stopped,
)

from .config import (
    DEFAULT_OUTBOX_RETENTION_S,
    DEFAULT_TOKEN_ENV,
    INBOX_RETENTION_S,
    ParticipantConfig,
    StatusFaults,
    token_from_env,
)
from .errors import ConfigError
from .service import ParticipantService
from .spec import ParticipantSpec, setting_fields

log = logging.getLogger("participants")

#: How the command is called in its usage line and its one-line errors.
PROG = "python -m participants"


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    """The participants one command line runs: their names, default ports and specs."""

    description: str
    """The command's ``--help`` description."""
    ports: Mapping[str, int]
    """Every name the command takes, in the order ``--help`` lists them, with its default HTTP port."""
    specs: Mapping[str, ParticipantSpec[Any]]
    """The specs by name; each one's settings become options (``--payment-limit``)."""
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    """Adds the catalog's own options (how its participants coordinate, say)."""
    choose: Callable[[argparse.Namespace, ParticipantSpec[Any] | None], ParticipantSpec[Any]] | None = None
    """The spec to run, from the parsed options and the named spec (its settings applied; ``None``
    for a name outside ``specs``); raises :class:`ContractError` for options that do not go
    together. Without it: the named spec."""


def build_parser(
    catalog: Catalog, spec: ParticipantSpec[Any] | None = None, *, prog: str = PROG
) -> argparse.ArgumentParser:
    """The command line common to every participant, the catalog's options, and ``spec``'s own settings."""
    p = Parser(prog=prog, description=catalog.description)
    names = list(catalog.ports)
    p.add_argument("name", choices=names, metavar="NAME", help="one of: " + ", ".join(names))
    p.add_argument(
        "--port",
        type=port_number,
        help="HTTP port (default: " + ", ".join(f"{n} {port}" for n, port in catalog.ports.items()) + ")",
    )
    if catalog.add_arguments is not None:
        catalog.add_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    add_broker_options(p, default=DEFAULT_BROKER, purpose=f"the MQTT broker (default {DEFAULT_BROKER})")
    p.add_argument("--prefix", default="saga", help="topic prefix (default saga)")
    p.add_argument(
        "--watermark-ms",
        type=int,
        default=1000,
        metavar="MS",
        help="publish a watermark (everything committed so far is published) at most this often "
        "while the outbox is empty, on PREFIX/watermark/NAME; 0: never (default 1000)",
    )
    p.add_argument(
        "--head-timeout",
        type=float,
        default=HEAD_TIMEOUT_S,
        metavar="S",
        help="close a connection that sent no complete request head within S seconds; 0: no bound "
        f"(default {HEAD_TIMEOUT_S:g})",
    )
    p.add_argument("--db", type=Path, help="SQLite file (default .saga-data/NAME.sqlite3)")
    p.add_argument(
        "--outbox-retention-s",
        type=float,
        default=DEFAULT_OUTBOX_RETENTION_S,
        metavar="S",
        help="keep published events this long, so POST /outbox/ID/republish can publish them again "
        f"(redrive a stalled workflow); at most {INBOX_RETENTION_S} (default {DEFAULT_OUTBOX_RETENTION_S:g})",
    )
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay added to status endpoints")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="± random spread of that delay")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of status requests answered 503")
    p.add_argument(
        "--slow-rate", type=float, default=0.0, help="share of status requests slowed by --slow-ms"
    )
    p.add_argument("--slow-ms", type=float, default=0.0, help="extra delay of those slow requests")
    p.add_argument("--client-id", help="MQTT client id (default: made once and kept in the database)")
    p.add_argument(
        "--token-env",
        default=DEFAULT_TOKEN_ENV,
        metavar="NAME",
        help=f"environment variable holding the bearer token every route but /healthz and /readyz "
        f"then requires (default {DEFAULT_TOKEN_ENV}; unset: auth off; set but empty: an error)",
    )
    add_log_level(p)
    if spec is not None:
        own = p.add_argument_group(f"{spec.name} settings")
        for f in setting_fields(spec):
            own.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f"setting_{f.name}",
                type=type(getattr(spec.settings, f.name)),
                default=getattr(spec.settings, f.name),
                help=f.metadata.get("help"),
            )
    return p


def config_from_args(args: argparse.Namespace, catalog: Catalog) -> ParticipantConfig:
    """Validate the parsed options into a :class:`ParticipantConfig` (raises :class:`ContractError`)."""
    return ParticipantConfig(
        host=args.host,
        port=catalog.ports[args.name] if args.port is None else args.port,
        broker=BrokerURL.parse(args.broker, ca=args.broker_ca),
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
        token=token_from_env(args.token_env),
        watermark_ms=args.watermark_ms,
        head_timeout_s=args.head_timeout,
        outbox_retention_s=args.outbox_retention_s,
    )


def spec_from_args(args: argparse.Namespace, catalog: Catalog) -> ParticipantSpec[Any]:
    """The named spec with its settings taken from the command line, as the catalog chooses it
    (raises :class:`ContractError`)."""
    spec = catalog.specs.get(args.name)
    if spec is not None:
        changes = {f.name: getattr(args, f"setting_{f.name}") for f in setting_fields(spec)}
        spec = spec.with_settings(**changes) if changes else spec
    if catalog.choose is not None:
        return catalog.choose(args, spec)
    if spec is None:
        raise ConfigError(f"{args.name}: the catalog has no spec of that name")
    return spec


async def serve(spec: ParticipantSpec[Any], config: ParticipantConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly (a second signal: at once)."""
    async with ParticipantService(spec, config=config) as service:
        auth = "bearer token" if config.token else "off"
        print(
            f"{spec.name}: listening on {service.url}, broker {config.broker}, prefix {config.prefix!r}, "
            f"auth: {auth}",
            flush=True,
        )
        await wait_for_stop_signal()
    log.info("%s: stopped", spec.name)


def main(catalog: Catalog, argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run the participant ``argv`` names from ``catalog``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The participant's name decides which options exist: find it first, then parse for real.
    named = next((catalog.specs[a] for a in argv if a in catalog.specs), None)
    parser = build_parser(catalog, named, prog=prog)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = config_from_args(args, catalog)
        spec = spec_from_args(args, catalog)
        tracing.configure_from_env(args.name)  # OTEL_TRACES_EXPORTER; off when unset
    except ContractError as exc:
        # One line, no usage dump and no traceback: the message says which option and why.
        return config_error(f"{parser.prog} {args.name}: error", exc)
    try:
        return serve_until_stopped(
            serve(spec, config), prog=args.name, address=f"{config.host}:{config.port}"
        )
    finally:
        tracing.shutdown()
