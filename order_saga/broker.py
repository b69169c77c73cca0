"""MQTT brokers this project starts itself: for tests, benchmarks and the no-setup demo.

:class:`MosquittoBroker` runs the real ``mosquitto`` binary on a free loopback port with
persistence on, and can be stopped, killed and restarted on the same port with its state.
:class:`~order_saga.embedded_broker.EmbeddedBroker` runs amqtt in-process where no
``mosquitto`` binary exists. amqtt is good enough for a demo but, unlike Mosquitto, drops an unacknowledged QoS 1 message when a
client disconnects instead of redelivering it, so crash-recovery guarantees need Mosquitto.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from contract import BrokerURL

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, never the same one twice in this process.

    It is taken below the kernel's ephemeral range where there is room: a port from that range
    (what binding port 0 gives) can be taken by any outgoing connection on the machine before
    the process it was meant for binds it. Remembering what was handed out keeps two such
    processes from colliding.
    """
    low = _ephemeral_low()
    if low - _BELOW_EPHEMERAL >= 1024:
        for _ in range(200):
            port = random.randrange(low - _BELOW_EPHEMERAL, low)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    for _ in range(100):  # no room below the range: let the kernel pick one
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no free port found")


#: How many ports below the ephemeral range :func:`free_port` draws from.
_BELOW_EPHEMERAL = 16_000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768, the usual one, elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def mosquitto_binary() -> str | None:
    """Path of the ``mosquitto`` executable, if one is installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class _Process:
    """A broker process on loopback that can be started, stopped, killed and started again.

    Subclasses give the command line and the ports that must accept connections before the
    process counts as started.
    """

    name = "broker"
    _proc: subprocess.Popen[bytes] | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ports(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) the process and wait until it accepts connections."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        waiting = list(self._ports())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}: {err.strip()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", waiting[0]), 0.2):
                waiting.pop(0)
                if not waiting:
                    return
                continue
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"{self.name} did not listen on port {waiting[0]} within {timeout}s")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM): the broker saves its state first."""
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


class _Managed:
    """Context-manager plumbing (sync and async) for a broker that has ``start`` and ``close``."""

    def start(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MosquittoBroker(_Process, _Managed):
    """A private Mosquitto on ``127.0.0.1:{port}`` with persistence in its own directory.

    Usable as a (sync or async) context manager; :meth:`stop` + :meth:`start` is a graceful
    restart that keeps persistent sessions and queued messages, :meth:`kill` a crash.
    """

    name = "mosquitto"

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

    def _argv(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]

    def _ports(self) -> tuple[int, ...]:
        return (self.port,)

    @property
    def url(self) -> BrokerURL:
        """Where clients connect."""
        return BrokerURL(host="127.0.0.1", port=self.port)

    def close(self) -> None:
        """Stop the broker and remove its directory."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def nats_binary() -> str | None:
    """Path of the ``nats-server`` executable, if one is installed."""
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/local/bin/nats-server") if Path(p).exists()), None
    )


class NatsNode(_Process):
    """One ``nats-server`` of a :class:`NatsCluster`: client, route and MQTT ports, its own store."""

    def __init__(self, binary: str, index: int, cluster: str, routes: list[int], workdir: Path) -> None:
        self.name = f"nats-server n{index}"
        self.binary = binary
        self.port, self.route_port, self.mqtt_port = free_port(), routes[index], free_port()
        self.dir = workdir / f"n{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "nats.conf"
        others = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes if p != self.route_port)
        self.conf.write_text(
            f"server_name: n{index}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{ store_dir: "{self.dir / "js"}" }}\n'
            f"cluster {{ name: {cluster}, listen: 127.0.0.1:{self.route_port}, routes: [{others}] }}\n"
            # Sessions, retained messages and the QoS 1 queue replicated on all three nodes.
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port}, stream_replicas: 3, ack_wait: 5s }}\n"
        )

    def _argv(self) -> list[str]:
        return [self.binary, "-c", str(self.conf), "-l", str(self.dir / "nats.log")]

    def _ports(self) -> tuple[int, ...]:
        return (self.port, self.mqtt_port)


class NatsCluster(_Managed):
    """A NATS JetStream cluster of ``size`` nodes on loopback, each with an MQTT listener.

    :attr:`url` names every node's MQTT listener (a comma-separated broker URL), so clients
    fail over between them; :meth:`kill` and :meth:`restart` act on one node. JetStream keeps
    its file storage under one temporary directory, removed by :meth:`close`.
    """

    def __init__(self, size: int = 3, *, workdir: Path | None = None) -> None:
        binary = nats_binary()
        if binary is None:
            raise FileNotFoundError("nats-server is not installed (apt-get install -y nats-server)")
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="nats-")
        self.dir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        routes = [free_port() for _ in range(size)]
        name = f"c{os.getpid()}x{routes[0]}"
        self.nodes = [NatsNode(binary, i, name, routes, self.dir) for i in range(size)]

    @property
    def url(self) -> BrokerURL:
        """Every node's MQTT listener, in node order."""
        first, *rest = self.nodes
        return BrokerURL(
            host="127.0.0.1", port=first.mqtt_port, more=tuple(("127.0.0.1", n.mqtt_port) for n in rest)
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start every node that is not running, then wait until the cluster serves MQTT sessions."""
        for node in self.nodes:
            node.start(timeout)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until each running node accepts a persistent MQTT session (JetStream has a leader)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while node.running and not _mqtt_session_ok(node.mqtt_port):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node.name}: no MQTT session accepted within {timeout}s")
                time.sleep(0.2)

    def kill(self, index: int) -> None:
        """SIGKILL one node."""
        self.nodes[index].kill()

    def close(self) -> None:
        """Stop every node and remove the storage directory."""
        for node in self.nodes:
            node.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def _mqtt_session_ok(port: int) -> bool:
    """Whether an MQTT CONNECT with a persistent session gets CONNACK 0 from ``127.0.0.1:port``."""
    client_id = f"probe{port}".encode()
    connect = (
        b"\x00\x04MQTT\x04\x00\x00\x0a"  # protocol 3.1.1, clean session off, keepalive 10
        + len(client_id).to_bytes(2, "big")
        + client_id
    )
    try:
        with socket.create_connection(("127.0.0.1", port), 2.0) as sock:
            sock.settimeout(5.0)
            sock.sendall(b"\x10" + bytes([len(connect)]) + connect)
            answer = sock.recv(4)
            ok = len(answer) == 4 and answer[0] == 0x20 and answer[3] == 0
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return ok
    except OSError:
        return False
