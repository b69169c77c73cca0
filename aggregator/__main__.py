"""``python -m aggregator serve|get|redrive|check-participant|demo`` (docs/design.md, "Aggregator command line").

``demo`` lives outside the aggregator, with the example saga it runs: the command line finds it
through the entry point ``demo`` of the group :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Coroutine, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol

from contract import HEAD_TIMEOUT_S, BrokerUnreachable, BrokerURL, ContractError, run, tracing
from contract.cli import (
    DEFAULT_BROKER,
    Parser,
    add_broker_options,
    add_log_level,
    bind_error,
    config_error,
    configure_logging,
    http_url,
    port_number,
    serve_until_stopped,
)

from ._jobs import MAX_RATE_PER_S, MAX_WORKFLOWS
from .cli_get import get_command, redrive_command, redrive_job_command
from .definition import Definition, Freshness, load_definition
from .errors import ConfigError, DefinitionError

log = logging.getLogger("aggregator")

#: The entry point group of the commands that live outside the aggregator (``demo``).
COMMANDS = "saga_aggregator.commands"
#: The demo's aggregator port unless ``--port`` says otherwise.
DEMO_PORT = 8000


class DemoCommand(Protocol):
    """What the ``demo`` entry point is: start everything, show the samples; the exit status."""

    def __call__(
        self, *, broker: BrokerURL | None, port: int, once: bool, freshness: Freshness
    ) -> Coroutine[Any, Any, int]: ...


def installed_command(name: str) -> Any:
    """The object of the entry point ``name`` in :data:`COMMANDS`; None if none is installed
    (:class:`ConfigError` if it does not load)."""
    for point in entry_points(group=COMMANDS, name=name):
        try:
            return point.load()
        except Exception as exc:  # a stale install, a missing dependency: say which, in one line
            raise ConfigError(f"entry point {point.name} = {point.value!r} of {COMMANDS}: {exc}") from exc
    return None


def build_parser() -> argparse.ArgumentParser:
    """The aggregator's command line."""
    parser = Parser(prog="python -m aggregator", description="Workflow status aggregator.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HTTP API")
    _add_definition_options(serve)
    serve.add_argument(
        "--freshness",
        choices=["on-demand", "ttl", "events"],
        help="how parts are kept fresh: on-demand (ask on every read), ttl (cache for a while), "
        "events (kept fresh by the participants' events from --broker) (default: the definition's)",
    )
    add_broker_options(
        serve,
        default=DEFAULT_BROKER,
        purpose=f"the MQTT broker for --freshness events (default {DEFAULT_BROKER})",
    )
    serve.add_argument("--prefix", default="saga", help="topic prefix for --freshness events (default saga)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0: any free one)")
    add_log_level(serve)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes serving one port (SO_REUSEPORT), each a whole aggregator (default 1)",
    )
    serve.add_argument(
        "--head-timeout",
        type=float,
        default=HEAD_TIMEOUT_S,
        metavar="S",
        help=f"close a connection that sent no complete request head within S seconds (default {HEAD_TIMEOUT_S:g})",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument(
        "--redrive",
        choices=["off", "auto"],
        default="off",
        help="auto: redrive stalled workflows by itself, each at most once per stall_after_ms "
        "(needs the definition's initiator; default off: only report them)",
    )

    get = sub.add_parser("get", help="print one workflow's view for a person")
    get.add_argument("workflow_id", metavar="ID", help="the workflow id (e.g. ord-42)")
    get.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="aggregator base URL: http://host:port, or host:port (default http://127.0.0.1:8000)",
    )
    get.add_argument("--json", action="store_true", help="print the raw JSON view")
    get.add_argument(
        "--token", default=os.environ.get("AGGREGATOR_TOKEN"), help="bearer token (default $AGGREGATOR_TOKEN)"
    )

    redrive = sub.add_parser(
        "redrive",
        help="ask every participant to republish a workflow's events, or (--stalled) run a redrive job "
        "over every stalled workflow",
    )
    redrive.add_argument("workflow_id", metavar="ID", nargs="?", help="the workflow id to redrive")
    redrive.add_argument(
        "--stalled",
        action="store_true",
        help="instead of one ID: start a redrive job over the stalled workflows (POST /redrives), "
        "follow its progress and print its results; exit 0 when none failed, 1 otherwise",
    )
    redrive.add_argument("--dry-run", action="store_true", help="with --stalled: list them, redrive nothing")
    redrive.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="N",
        help="with --stalled: workflows redriven a second, at most (default 20, at most 500)",
    )
    redrive.add_argument(
        "--max",
        type=int,
        default=None,
        metavar="N",
        help="with --stalled: workflows taken, at most (default 1000)",
    )
    redrive.add_argument(
        "--token-env",
        metavar="NAME",
        default=None,
        help="read the bearer token from this environment variable (instead of --token)",
    )
    redrive.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="aggregator base URL: http://host:port, or host:port (default http://127.0.0.1:8000)",
    )
    redrive.add_argument(
        "--token", default=os.environ.get("AGGREGATOR_TOKEN"), help="bearer token (default $AGGREGATOR_TOKEN)"
    )

    check = sub.add_parser(
        "check-participant",
        help="ask one participant as the aggregator would, and show how its answer maps",
        description="Ask one participant for one workflow as the aggregator would (and through its "
        "batch endpoint), print the request, the raw answer, the part it maps to and every problem. "
        "Exit 0: the part maps cleanly; 1: a mapping problem; 2: the participant cannot be reached "
        "or the definition is wrong.",
    )
    check.add_argument("name", metavar="NAME", help="the participant, as the definition names it")
    check.add_argument("--id", required=True, dest="workflow_id", metavar="ID", help="a workflow it knows")
    _add_definition_options(check)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(freshness=None)

    demo = sub.add_parser(
        "demo", help="broker, participants and aggregator in one command, with sample orders"
    )
    add_broker_options(demo, default=None, purpose="the MQTT broker (default: start a private one)")
    demo.add_argument(
        "--port",
        type=port_number,
        help=f"aggregator port (default {DEMO_PORT}; --once ignores it and uses a free one)",
    )
    demo.add_argument(
        "--once",
        action="store_true",
        help="run the scripted demo and exit 0 if every workflow ended as expected",
    )
    demo.add_argument(
        "--freshness",
        choices=["on-demand", "ttl", "events"],
        default="on-demand",
        help="how the aggregator keeps parts fresh: on-demand (ask on every read), ttl (cache "
        "for a while), events (kept fresh by the participants' events) (default on-demand)",
    )
    return parser


def _add_definition_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--participant NAME=URL``, which :func:`definition_from_args` reads."""
    parser.add_argument("--config", help="workflow definition (TOML); default: the packaged example saga")
    parser.add_argument(
        "--participant",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="override one participant's base URL (http://host:port, or host:port)",
    )


def definition_from_args(args: argparse.Namespace) -> Definition:
    """Load ``--config`` and apply ``--participant`` and ``--freshness`` (raises :class:`DefinitionError`)."""
    definition = load_definition(args.config)
    urls = {}
    for item in args.participant:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise DefinitionError(f"--participant {item!r}: expected NAME=URL")
        urls[name] = http_url(url)  # host:port as everywhere else a URL is taken
    if urls:
        definition = definition.with_urls(urls)
    if args.freshness:
        definition = definition.with_settings(freshness=args.freshness)
    definition.credentials()  # a token_env naming an empty variable is a start-up error
    return definition


def inbound_token(definition: Definition) -> str | None:
    """``$AGGREGATOR_TOKEN``, else the definition's ``[auth]``; set but empty is an error, never "auth off"."""
    if "AGGREGATOR_TOKEN" in os.environ:
        token = os.environ["AGGREGATOR_TOKEN"].strip()
        if not token:
            raise DefinitionError("AGGREGATOR_TOKEN is set but empty: give it a token, or unset it")
        return token
    return definition.auth.bearer()


async def serve(args: argparse.Namespace, definition: Definition) -> None:
    """Run the HTTP API until SIGINT/SIGTERM."""
    from contract import serve_app, wait_for_stop_signal

    from .core import Aggregator
    from .web import create_app

    async with (
        Aggregator(definition, broker=args.broker_url, prefix=args.prefix, redrive=args.redrive) as agg,
        serve_app(
            create_app(agg, token=args.token),
            args.host,
            args.port,
            reuse_port=args.reuse_port,
            head_timeout=args.head_timeout,
        ) as url,
    ):
        print(
            f"aggregator: serving {definition.name} on {url} "
            f"({definition.settings.freshness}; auth: {'bearer token' if args.token else 'off'}; "
            f"redrive: {args.redrive}; "
            "participants: " + ", ".join(f"{n} {p.url}" for n, p in definition.participants.items()) + ")",
            flush=True,
        )
        # After the start line (scripts read it first): WARNING lines naming the participants
        # that cannot be reached, within a couple of seconds, and /readyz knows each one.
        await agg.probe()
        if not args.reuse_port:
            await wait_for_stop_signal()
            return
        from ._workers import supervisor_gone

        # A worker of `serve --workers N`: stop on a signal, or when the supervisor is gone.
        waits = [asyncio.ensure_future(wait_for_stop_signal()), asyncio.ensure_future(supervisor_gone())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


def _usage(parser: argparse.ArgumentParser, message: str, command: str = "redrive") -> int:
    """A usage error of ``command``, under its own usage (exit 2)."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        choices = getattr(action, "choices", None) or {}
        if command in choices:
            choices[command].error(message)
    parser.error(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "log_level", "WARNING"))
    if args.command == "get":
        return asyncio.run(get_command(args.url, args.workflow_id, as_json=args.json, token=args.token))
    if args.command == "redrive":
        token = args.token
        if args.token_env is not None:
            token = os.environ.get(args.token_env)
            if not token:
                print(f"--token-env {args.token_env}: that variable is not set", file=sys.stderr)
                return 2
        if args.stalled == (args.workflow_id is not None):
            return _usage(parser, "give one workflow ID, or --stalled (not both)")
        job_only = {"--dry-run": args.dry_run, "--rate": args.rate is not None, "--max": args.max is not None}
        if not args.stalled and any(job_only.values()):
            given = next(name for name, on in job_only.items() if on)
            return _usage(parser, f"{given} goes with --stalled")
        if args.rate is not None and not 0 < args.rate <= MAX_RATE_PER_S:
            return _usage(parser, f"--rate must be above 0 and at most {MAX_RATE_PER_S:g}")
        if args.max is not None and not 1 <= args.max <= MAX_WORKFLOWS:
            return _usage(parser, f"--max must be from 1 to {MAX_WORKFLOWS}")
        if args.stalled:
            return asyncio.run(
                redrive_job_command(
                    args.url, token=token, dry_run=args.dry_run, rate_per_s=args.rate, max_workflows=args.max
                )
            )
        return asyncio.run(redrive_command(args.url, args.workflow_id, token=token))
    if args.command == "check-participant":
        return _check(args)
    if args.command == "demo":
        return _demo(args)
    try:
        definition = definition_from_args(args)
        args.token = inbound_token(definition)
        args.broker_url = BrokerURL.parse(args.broker, ca=args.broker_ca)
        if args.redrive == "auto" and definition.initiator is None:
            raise DefinitionError("--redrive auto needs the definition's initiator", field="initiator")
        initiator = definition.participants.get(definition.initiator or "")
        if args.redrive == "auto" and initiator is not None and initiator.mapped:
            raise DefinitionError(
                f"--redrive auto needs the initiator's listing, and {definition.initiator} is read "
                "through a mapping (it has none)",
                field="initiator",
            )
        if args.workers == 1:  # a supervisor serves nothing: its workers trace
            tracing.configure_from_env("aggregator")  # OTEL_TRACES_EXPORTER; off when unset
    except (DefinitionError, ContractError) as exc:
        # A configuration problem, not a usage one: say what is wrong, without the usage line.
        return config_error("aggregator", exc)
    if not 1 <= args.workers <= 64:
        return config_error("aggregator", "--workers must be between 1 and 64")
    if not 0 <= args.head_timeout <= 3600:  # 0: no bound (NaN fails this too)
        return config_error("aggregator", "--head-timeout must be between 0 and 3600 seconds")
    if args.workers > 1:
        from ._workers import supervise

        serve_argv = list(sys.argv[1:] if argv is None else argv)
        serve_argv = serve_argv[serve_argv.index("serve") + 1 :]
        try:
            return run(supervise(serve_argv, workers=args.workers, host=args.host, port=args.port))
        except (KeyboardInterrupt, asyncio.CancelledError):
            return 130
    try:
        return serve_until_stopped(
            serve(args, definition), prog="aggregator", address=f"{args.host}:{args.port}"
        )
    finally:
        tracing.shutdown()


def _demo(args: argparse.Namespace) -> int:
    """``demo``: everything in one command; the exit status."""
    try:
        run_demo: DemoCommand | None = installed_command("demo")
    except ConfigError as exc:
        return config_error("aggregator: demo", exc)
    if run_demo is None:
        return config_error(
            "aggregator: demo",
            f"not installed (no entry point 'demo' in the group {COMMANDS}; the example saga's "
            "package provides it: pip install -e .)",
        )
    port = DEMO_PORT if args.port is None else args.port
    if args.once and args.port is not None:
        # Said, not silently dropped: --once serves on a free port, only while the samples run.
        print(
            "aggregator: demo --once ignores --port (it serves on a free port, only while the samples run)",
            file=sys.stderr,
            flush=True,
        )
    address = f"127.0.0.1:{port}"
    if not args.once:  # before starting a broker and four participants for nothing
        said = _unbindable("127.0.0.1", port)
        if said is not None:
            return config_error("aggregator: demo", said)
    try:
        broker = BrokerURL.parse(args.broker, ca=args.broker_ca) if args.broker else None
        return run(run_demo(broker=broker, port=port, once=args.once, freshness=args.freshness))
    except OSError as exc:
        said = bind_error(exc, address)
        if said is not None:
            return config_error("aggregator: demo", said)
        print(f"aggregator: demo failed: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except BrokerUnreachable as exc:
        hint = "start it, or leave out --broker for a private one"
        print(f"aggregator: demo failed: {exc}; {hint}", file=sys.stderr)
        return 1
    except ContractError as exc:
        return config_error("aggregator: demo", exc)
    except RuntimeError as exc:  # e.g. the participants could not connect to the broker
        print(f"aggregator: demo failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


def _unbindable(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` (the line to say), or None if it can."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return bind_error(exc, f"{host}:{port}")
    return None


def _check(args: argparse.Namespace) -> int:
    """``check-participant``: the report, and its exit status."""
    import json

    from contract import is_valid_workflow_id

    from .check import check_participant, render

    if not is_valid_workflow_id(args.workflow_id):
        return config_error(
            "aggregator: check-participant", f"--id {args.workflow_id[:140]!r} is not a workflow id"
        )
    try:
        definition = definition_from_args(args)
        report = asyncio.run(check_participant(definition, args.name, args.workflow_id))
    except DefinitionError as exc:
        return config_error("aggregator: check-participant", exc)
    print(json.dumps(report.to_json(), indent=2) if args.json else render(report))
    return report.exit_status


if __name__ == "__main__":
    sys.exit(main())
