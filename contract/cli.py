"""Command-line plumbing every program of the project shares: the common options, logging, and
how a configuration error, a failure to start and a stop signal become exit statuses.

Exit statuses: 0 done, 1 could not start or failed (a broker that does not answer), 2 a usage
or configuration error, an address in use or not ours to bind included (one line on stderr
that names the option to change, no traceback), 130 stopped at once by a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import errno
import logging
import re
import sys
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, NoReturn

from .serving import run

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
#: What every ``--broker`` option says of its value.
BROKER_URL_HELP = "mqtt:// or mqtts://[user@]host[:port], several comma-separated for one cluster (password from $MQTT_PASSWORD)"


class Parser(argparse.ArgumentParser):
    """argparse's parser, with usage errors that help: a mistyped option or value gets its
    closest match (difflib), and a subcommand's error shows the subcommand's usage.

    argparse leaves the arguments a subcommand does not know to the top-level parser, which
    then reports them under its own usage (``prog {serve,get,…} ...``), useless for finding the
    option meant. Subcommands made with ``add_subparsers(parser_class=Parser)`` refuse them
    themselves (:meth:`parse_known_args`), under their own usage.
    """

    def add_subparsers(self, **kwargs: Any) -> Any:
        """Subcommands are :class:`Parser` too, each refusing the arguments it does not know."""
        kwargs.setdefault("parser_class", _Subcommand)
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> NoReturn:
        """The usage of this (sub)command, ``prog: error: message``, and a close match if any; exit 2."""
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{self._suggestion(message)}\n")

    def _suggestion(self, message: str) -> str:
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            known = [o for o in self._option_string_actions if o.startswith("--")]
            for word in unknown.group(1).split():
                if word.startswith("-"):
                    match = _closest(word.partition("=")[0], known)
                    if match:
                        return f" (did you mean {match}?)"
            return ""
        invalid = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if invalid:
            match = _closest(invalid.group(1), [c.strip().strip("'") for c in invalid.group(2).split(",")])
            return f" (did you mean {match}?)" if match else ""
        return ""


class _Subcommand(Parser):
    """A subcommand's parser: an argument it does not know is its own usage error."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word``, if one is close; leading dashes left out of the
    comparison (``--bogus`` is not close to ``--host`` because both start with ``--``)."""
    by_name = {c.lstrip("-"): c for c in candidates}
    found = difflib.get_close_matches(word.lstrip("-"), list(by_name), n=1, cutoff=0.6)
    return by_name[found[0]] if found else None


def port_number(text: str) -> int:
    """An argparse ``type`` for ``--port``: an integer 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range 0-65535")
    return port


def http_url(text: str) -> str:
    """An HTTP base URL as every URL option takes it: ``http(s)://host[:port][/path]`` as given,
    or ``host:port`` (and ``host``) meaning ``http://host:port``; a trailing ``/`` dropped.

    ``localhost:8001`` would otherwise read as a URL of the scheme ``localhost``.
    """
    text = text.strip()
    if text and "://" not in text:
        text = f"http://{text}"
    return text.rstrip("/")


def add_broker_options(parser: argparse.ArgumentParser, *, default: str | None, purpose: str) -> None:
    """``--broker URL`` (``purpose`` says what for, and the default) and ``--broker-ca FILE``."""
    parser.add_argument("--broker", default=default, metavar="URL", help=f"{purpose}: {BROKER_URL_HELP}")
    parser.add_argument("--broker-ca", metavar="FILE", help="CA certificate(s) for an mqtts:// broker")


def add_log_level(parser: argparse.ArgumentParser, *, default: str = "INFO") -> None:
    """``--log-level``."""
    parser.add_argument(
        "--log-level", default=default, choices=LOG_LEVELS, help=f"what to log on stderr (default {default})"
    )


def configure_logging(level: str) -> None:
    """Log to stderr at ``level``, one line a record; the MQTT client's chatter only from WARNING."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger("mqtt").setLevel(logging.WARNING)


def config_error(prog: str, exc: BaseException | str) -> int:
    """Say what is wrong with the configuration in one line (``prog: what``); exit status 2."""
    print(f"{prog}: {exc}", file=sys.stderr)
    return 2


def serve_until_stopped(main: Coroutine[Any, Any, None], *, prog: str, address: str | None = None) -> int:
    """Run a server's ``main`` (which returns at a stop signal) and turn how it ended into an exit status.

    An address that cannot be bound (in use, not this machine's, a privileged port): 2, with
    one line naming ``address`` and the option to change (:func:`bind_error`); another
    ``OSError`` while starting: 1; a second Ctrl-C (``KeyboardInterrupt``, or the task
    cancelled): 130.
    """
    try:
        run(main)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except OSError as exc:
        said = bind_error(exc, address) if address is not None else None
        if said is not None:
            return config_error(prog, said)
        print(f"{prog}: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


#: errno of a failed bind -> what to say, and the option that changes it.
_BIND_ERRORS = {
    errno.EADDRINUSE: ("address already in use", "pick a free port with --port"),
    errno.EACCES: ("permission denied", "pick a port above 1023 with --port"),
    errno.EADDRNOTAVAIL: ("not an address of this machine", "check --host"),
}


def bind_error(exc: OSError, address: str) -> str | None:
    """The one line for a listening socket that could not be bound at ``address`` (``host:port``),
    with the option to change; None when ``exc`` is not such an error."""
    if exc.errno not in _BIND_ERRORS:
        return None
    what, hint = _BIND_ERRORS[exc.errno]
    return f"cannot serve on {address}: {what} ({hint})"
