"""MQTT brokers this project starts itself: for tests, benchmarks and the no-setup demo.

:class:`MosquittoBroker` runs the real ``mosquitto`` binary on a free loopback port with
persistence on, and can be stopped, killed and restarted on the same port with its state.
:class:`EmbeddedBroker` runs amqtt in-process where no ``mosquitto`` binary exists. amqtt is
good enough for a demo but, unlike Mosquitto, drops an unacknowledged QoS 1 message when a
client disconnects instead of redelivering it, so crash-recovery guarantees need Mosquitto.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from contract import BrokerURL

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, never the same one twice in this process.

    The kernel may offer a just-released port again before the process it was meant for has
    bound it; remembering what was handed out keeps two such processes from colliding.
    """
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no free port found")


def mosquitto_binary() -> str | None:
    """Path of the ``mosquitto`` executable, if one is installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class MosquittoBroker:
    """A private Mosquitto on ``127.0.0.1:{port}`` with persistence in its own directory.

    Usable as a (sync or async) context manager; :meth:`stop` + :meth:`start` is a graceful
    restart that keeps persistent sessions and queued messages, :meth:`kill` a crash.
    """

    def __init__(self, *, port: int | None = None, workdir: Path | None = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="mosquitto-")
        self.dir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.conf = self.dir / "mosquitto.conf"
        # Started as root, Mosquitto switches to user "mosquitto", which cannot write our
        # private directory: persistence would silently stay in memory. Keep our own user.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            user + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            # Persistent sessions must be able to queue a whole burst while a participant is
            # down; the default cap (1000) would silently drop past it.
            "max_queued_messages 0\n"
            # Nagle + delayed ACKs hold small messages back ~40 ms on loopback.
            "set_tcp_nodelay true\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.dir / 'mosquitto.log'}\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> BrokerURL:
        """Where clients connect."""
        return BrokerURL(host="127.0.0.1", port=self.port)

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) the broker and wait until it accepts connections."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err.strip()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM): Mosquitto writes its persistence file first."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): what was not yet persisted is lost, as in a real crash."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def close(self) -> None:
        """Stop the broker and remove its directory."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EmbeddedBroker:
    """An in-process amqtt broker on a free loopback port (demo fallback without Mosquitto)."""

    def __init__(self) -> None:
        self._broker: Any = None
        self.port = 0

    @property
    def url(self) -> BrokerURL:
        """Where clients connect."""
        return BrokerURL(host="127.0.0.1", port=self.port)

    async def __aenter__(self) -> Self:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise RuntimeError(
                "no MQTT broker to start: install mosquitto (apt-get install -y mosquitto) "
                "or the demo extra (pip install 'saga-aggregator[demo]'), or pass --broker URL"
            ) from exc

        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        self.port = free_port()
        config = {
            "listeners": {"default": {"bind": f"127.0.0.1:{self.port}"}},
            # Not amqtt's anonymous plugin: it makes every session non-persistent.
            "plugins": {f"{__name__}._AllowAll": {}},
        }
        self._broker = Broker(config)
        await self._broker.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._broker is not None:
            await self._broker.shutdown()


def _allow_all_plugin() -> type:
    from amqtt.plugins.base import BaseAuthPlugin

    class AllowAll(BaseAuthPlugin):  # type: ignore[misc]
        """Accepts every client while keeping its session persistent."""

        async def authenticate(self, *, session: Any) -> bool:
            return True

    return AllowAll


def __getattr__(name: str) -> Any:
    # amqtt imports plugins by dotted path; build the class lazily so that importing this
    # module never imports amqtt.
    if name == "_AllowAll":
        return _allow_all_plugin()
    raise AttributeError(name)
