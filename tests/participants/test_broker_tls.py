"""mqtts:// with a private CA, credentials from MQTT_PASSWORD, stay_connected's log lines and its failover between nodes, on real Mosquittos.

The certificates are a throwaway CA and a server certificate for 127.0.0.1 made with the
``openssl`` command line in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from contract import BrokerURL, SubscriptionRefused, reconnect, stay_connected
from contract.broker import PASSWORD_ENV
from contract.tasks import cancel_and_wait
from order_saga.broker import MosquittoBroker, free_port, mosquitto_binary

from ..support import needs_mosquitto

SECRET = "tls-test-S3cret"
LOGGER = "tests.broker_tls"

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (EC P-256)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=saga test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for command in commands:
        subprocess.run([str(c) for c in command], check=True, capture_output=True, timeout=60)
    return Certs(ca=ca, cert=cert, key=key)


class TlsMosquitto(MosquittoBroker):
    """The suite's Mosquitto helper with a TLS listener (and optionally a password file) instead."""

    def __init__(self, certs: Certs, *, password_file: Path | None = None) -> None:
        super().__init__()
        user = "user root\n" if os.geteuid() == 0 else ""
        auth = (
            f"allow_anonymous false\npassword_file {password_file}\n"
            if password_file
            else "allow_anonymous true\n"
        )
        self.conf.write_text(
            user + f"listener {self.port} 127.0.0.1\n"
            f"cafile {certs.ca}\ncertfile {certs.cert}\nkeyfile {certs.key}\n"
            + auth
            + "log_type error\nlog_type warning\n"
            f"log_dest file {self.dir / 'mosquitto.log'}\n"
        )


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    return make_certs(tmp_path / "certs")


@pytest.fixture
def tls_broker(certs: Certs) -> Iterator[TlsMosquitto]:
    if mosquitto_binary() is None:
        pytest.skip("needs the mosquitto binary")
    with TlsMosquitto(certs) as broker:
        yield broker


@pytest.fixture
def passwords(tmp_path: Path) -> Path:
    """A Mosquitto password file with user alice, password SECRET."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs mosquitto_passwd")
    path = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(path), "alice", SECRET],
        check=True,
        capture_output=True,
        timeout=30,
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return logging.getLogger(LOGGER)


@pytest.fixture(autouse=True)
def no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


def records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level and text in r.getMessage()]


async def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def assert_one_line_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    for r in caplog.records:
        if r.name == LOGGER:
            assert r.exc_info is None and "\n" not in r.getMessage(), r.getMessage()
    assert SECRET not in caplog.text
    assert "Traceback" not in caplog.text


class EchoSession:
    """A stay_connected session: subscribe, publish one message to itself, record it, stay up."""

    def __init__(self, url: BrokerURL) -> None:
        self.url = url
        self.topic = f"t{uuid.uuid4().hex[:10]}/echo"
        self.received: list[bytes] = []

    async def __call__(self) -> None:
        async with self.url.client(
            identifier=f"tls-{uuid.uuid4().hex[:8]}", clean_session=True, timeout=5
        ) as client:
            await client.subscribe(self.topic, qos=1)
            await client.publish(self.topic, f"hello {len(self.received)}".encode(), qos=1)
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.received.append(message.payload)


@needs_openssl
@needs_mosquitto
async def test_mqtts_with_private_ca_connects_publishes_and_receives(
    tls_broker: TlsMosquitto, certs: Certs, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    url = BrokerURL.parse(f"mqtts://127.0.0.1:{tls_broker.port}", ca=certs.ca)
    session = EchoSession(url)
    task = asyncio.create_task(stay_connected(session, broker=url, who="tls-test", log=log))
    try:
        await wait_until(lambda: session.received)
        assert session.received == [b"hello 0"]
        connected = records(
            caplog, logging.INFO, f"tls-test: connected to mqtts://127.0.0.1:{tls_broker.port}"
        )
        assert len(connected) == 1
        assert not [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]

        # A broker restart: one WARNING for the lost link, one INFO when it is back.
        tls_broker.stop()
        await wait_until(lambda: records(caplog, logging.WARNING, "broker link to mqtts://127.0.0.1"))
        tls_broker.start()
        await wait_until(lambda: len(session.received) == 2)
        assert session.received[1] == b"hello 1"
        await wait_until(lambda: records(caplog, logging.INFO, "tls-test: reconnected to mqtts://127.0.0.1"))
    finally:
        await cancel_and_wait(task)
    assert_one_line_no_secret(caplog)


@needs_openssl
@needs_mosquitto
async def test_mqtts_without_the_private_ca_is_refused_with_a_warning(
    tls_broker: TlsMosquitto, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Without --broker-ca the system trust store does not know the throwaway CA: verification fails."""
    url = BrokerURL.parse(f"mqtts://127.0.0.1:{tls_broker.port}")
    session = EchoSession(url)
    task = asyncio.create_task(stay_connected(session, broker=url, who="tls-test", log=log))
    try:
        await wait_until(lambda: records(caplog, logging.WARNING, "certificate verify failed"))
    finally:
        await cancel_and_wait(task)
    assert session.received == []
    (first, *_) = records(caplog, logging.WARNING, "certificate verify failed")
    assert first.getMessage().startswith(f"tls-test: cannot connect to mqtts://127.0.0.1:{tls_broker.port} (")
    assert not records(caplog, logging.INFO, "connected")
    assert_one_line_no_secret(caplog)


@needs_openssl
@needs_mosquitto
async def test_password_from_environment_and_a_readable_authentication_failure(
    certs: Certs,
    passwords: Path,
    log: logging.Logger,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TlsMosquitto(certs, password_file=passwords) as broker:
        monkeypatch.setenv(PASSWORD_ENV, "wrong-password")
        wrong = BrokerURL.parse(f"mqtts://alice@127.0.0.1:{broker.port}", ca=certs.ca)
        task = asyncio.create_task(stay_connected(EchoSession(wrong), broker=wrong, who="auth-test", log=log))
        try:
            await wait_until(lambda: records(caplog, logging.WARNING, "Not authorized"))
        finally:
            await cancel_and_wait(task)
        (refused, *_) = records(caplog, logging.WARNING, "Not authorized")
        assert refused.getMessage().startswith(
            f"auth-test: cannot connect to mqtts://alice:***@127.0.0.1:{broker.port} "
            "(refused by the broker: Not authorized (CONNACK code 135); check the user name and password"
        )
        assert "wrong-password" not in caplog.text

        monkeypatch.setenv(PASSWORD_ENV, SECRET)
        right = BrokerURL.parse(f"mqtts://alice@127.0.0.1:{broker.port}", ca=certs.ca)
        assert right.password == SECRET
        session = EchoSession(right)
        task = asyncio.create_task(stay_connected(session, broker=right, who="auth-test", log=log))
        try:
            await wait_until(lambda: session.received)
        finally:
            await cancel_and_wait(task)
        assert records(
            caplog, logging.INFO, f"auth-test: connected to mqtts://alice:***@127.0.0.1:{broker.port}"
        )
    assert_one_line_no_secret(caplog)


def attempts(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every failed connect's line, WARNING or DEBUG, in order."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER
        and r.levelno in (logging.DEBUG, logging.WARNING)
        and "cannot connect" in r.getMessage()
    ]


@pytest.mark.slow
async def test_refused_connection_warns_once_per_warning_step_without_the_password(
    log: logging.Logger, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens: the first failure is a WARNING, the quick retries after it DEBUG lines, and
    the next WARNING comes a warning step later with the count of attempts; never the password."""
    monkeypatch.setattr(reconnect, "WARN_FIRST_S", 1.0)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    port = free_port()  # nothing listens there
    url = BrokerURL.parse(f"mqtt://alice:{SECRET}@127.0.0.1:{port}")
    session = EchoSession(url)
    task = asyncio.create_task(stay_connected(session, broker=url, who="refused-test", log=log))
    try:
        await wait_until(lambda: len(records(caplog, logging.WARNING, "cannot connect")) >= 2)
    finally:
        await cancel_and_wait(task)
    first, second = records(caplog, logging.WARNING, "cannot connect")[:2]
    assert first.getMessage().startswith(
        f"refused-test: cannot connect to mqtt://alice:***@127.0.0.1:{port} (Connection refused); retrying in "
    ), first.getMessage()
    assert second.created - first.created >= 0.9  # one warning step later, not at the next try
    assert re.match(
        rf"refused-test: cannot connect to mqtt://alice:\*\*\*@127\.0\.0\.1:{port} "
        r"\(Connection refused; \d+ attempts in \d+s\); retrying in [\d.]+s \(next warning in 2s\)$",
        second.getMessage(),
    ), second.getMessage()
    between = [r for r in caplog.records if r.name == LOGGER and first.created < r.created < second.created]
    assert len(between) >= 2 and all(r.levelno == logging.DEBUG for r in between)
    assert not records(caplog, logging.INFO, "connected")
    assert_one_line_no_secret(caplog)


@pytest.mark.slow
async def test_a_changed_reason_is_warned_at_once(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """A node that fails for a new reason is news: its first failure of that kind is a WARNING."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    port = free_port()
    url = BrokerURL.parse(f"mqtt://127.0.0.1:{port}")
    reasons = iter(["first reason", "first reason", "first reason", "second reason"])

    async def failing() -> None:
        raise aiomqtt.MqttError(next(reasons, "second reason"))

    task = asyncio.create_task(stay_connected(failing, broker=url, who="changing", log=log))
    try:
        await wait_until(lambda: len(attempts(caplog)) >= 5)
    finally:
        await cancel_and_wait(task)
    warned = [r.getMessage() for r in records(caplog, logging.WARNING, "cannot connect")]
    assert [m.split(" (")[1].split(")")[0] for m in warned] == ["first reason", "second reason"]


@needs_mosquitto
async def test_failover_skips_a_dead_first_node_and_moves_on_when_its_node_is_lost(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Nodes ``dead,a,b``: the link comes up on ``a``; ``a`` killed, it moves to ``b`` at once."""
    dead = free_port()  # nothing listens there
    with MosquittoBroker() as a, MosquittoBroker() as b:
        url = BrokerURL.parse(f"mqtt://alice:{SECRET}@127.0.0.1:{dead},127.0.0.1:{a.port},127.0.0.1:{b.port}")
        session = EchoSession(url)
        task = asyncio.create_task(stay_connected(session, broker=url, who="failover", log=log))
        try:
            await wait_until(lambda: session.received)
            assert records(
                caplog, logging.INFO, f"failover: connected to mqtt://alice:***@127.0.0.1:{a.port}"
            )
            (skipped,) = records(caplog, logging.WARNING, "cannot connect")
            assert skipped.getMessage().startswith(
                f"failover: cannot connect to mqtt://alice:***@127.0.0.1:{dead} (Connection refused); "
                f"trying mqtt://alice:***@127.0.0.1:{a.port} in 0.0"
            ), skipped.getMessage()

            a.kill()
            await wait_until(lambda: len(session.received) == 2)  # a new session, on b
            (lost,) = records(caplog, logging.WARNING, "lost")
            assert (
                lost.getMessage().startswith(
                    f"failover: broker link to mqtt://alice:***@127.0.0.1:{a.port} lost ("
                )
                and f"; moving to mqtt://alice:***@127.0.0.1:{b.port} in 0.0" in lost.getMessage()
            )
            assert records(
                caplog, logging.INFO, f"failover: reconnected to mqtt://alice:***@127.0.0.1:{b.port}"
            )
        finally:
            await cancel_and_wait(task)
    assert_one_line_no_secret(caplog)


async def test_all_nodes_down_backs_off_after_each_round(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Two dead nodes: the second is tried at once, then the loop backs off before the next round."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    ports = (free_port(), free_port())
    url = BrokerURL.parse(",".join(f"mqtt://127.0.0.1:{p}" for p in ports))
    task = asyncio.create_task(stay_connected(EchoSession(url), broker=url, who="all-down", log=log))
    try:
        await wait_until(lambda: len(attempts(caplog)) >= 6)
    finally:
        await cancel_and_wait(task)
    messages = attempts(caplog)
    tried = [int(m.split(" (")[0].rsplit(":", 1)[1]) for m in messages]
    assert tried[:6] == [ports[0], ports[1]] * 3  # in order, round after round
    pauses = [float(m.rsplit(" in ", 1)[1].rstrip("s")) for m in messages[:6]]
    assert all(p <= 0.05 for p in pauses[0::2])  # on to the second node at once
    # Between rounds, a growing backoff.
    assert pauses[5] >= 0.1 > pauses[1] >= 0.02 and pauses[3] >= pauses[1]


@needs_mosquitto
@pytest.mark.slow
async def test_links_that_drop_at_once_on_every_node_back_off(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Every node accepts the connection and then refuses the subscription: the loop does not spin
    through the nodes at full speed, it backs off after each round like failed connects."""
    with MosquittoBroker() as a, MosquittoBroker() as b:
        url = BrokerURL.parse(f"mqtt://127.0.0.1:{a.port},127.0.0.1:{b.port}")

        async def refused() -> None:
            async with url.client(identifier=f"r-{uuid.uuid4().hex[:8]}", clean_session=True, timeout=5):
                raise SubscriptionRefused("the broker refused the subscription to t/x")

        task = asyncio.create_task(stay_connected(refused, broker=url, who="refusing", log=log))
        try:
            await wait_until(lambda: len(records(caplog, logging.WARNING, "lost")) >= 6)
        finally:
            await cancel_and_wait(task)
    messages = [r.getMessage() for r in records(caplog, logging.WARNING, "lost")]
    assert all("refused the subscription" in m for m in messages)
    pauses = [float(m.rsplit(" in ", 1)[1].rstrip("s")) for m in messages[:6]]
    # A growing backoff between rounds.
    assert pauses[5] >= 0.1 > pauses[1] >= 0.02 and pauses[3] >= pauses[1]
