"""Command-line plumbing every program of the project shares: the common options, logging, and
how a configuration error, a failure to start and a stop signal become exit statuses.

Exit statuses: 0 done, 1 could not start (an address in use, a broker that never answered),
2 a usage or configuration error (one line on stderr that names the option, no traceback),
130 stopped at once by a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from .serving import run

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
#: What every ``--broker`` option says of its value.
BROKER_URL_HELP = "mqtt:// or mqtts://[user@]host[:port], several comma-separated for one cluster (password from $MQTT_PASSWORD)"


def add_broker_options(parser: argparse.ArgumentParser, *, default: str | None, purpose: str) -> None:
    """``--broker URL`` (``purpose`` says what for, and the default) and ``--broker-ca FILE``."""
    parser.add_argument("--broker", default=default, metavar="URL", help=f"{purpose}: {BROKER_URL_HELP}")
    parser.add_argument("--broker-ca", metavar="FILE", help="CA certificate(s) for an mqtts:// broker")


def add_log_level(parser: argparse.ArgumentParser, *, default: str = "INFO") -> None:
    """``--log-level``."""
    parser.add_argument("--log-level", default=default, choices=LOG_LEVELS, help=f"(default {default})")


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

    ``OSError`` while starting: 1, with one line that names ``address`` when it is in use;
    a second Ctrl-C (``KeyboardInterrupt``, or the task cancelled): 130.
    """
    try:
        run(main)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and address is not None:
            print(f"{prog}: cannot serve on {address}: address already in use", file=sys.stderr)
        else:
            print(f"{prog}: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
