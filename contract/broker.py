"""The MQTT broker as both sides reach it: its URL and the client factory (the reconnect loop
that uses them is :mod:`contract.reconnect`).

A broker URL is ``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://…`` (TLS,
port 8883), with an optional CA file for a private CA (``--broker-ca FILE``). The password may
come from the environment (:data:`PASSWORD_ENV`) instead of the URL, and is never printed or
logged: ``str()``, ``repr()`` and every error message show it as ``***``.

Several URLs, comma-separated, name the nodes of one clustered broker
(``mqtt://a:1883,mqtt://b:1883`` or, sharing the first's scheme and user, ``mqtt://u@a,b,c:1884``).
The nodes of one broker share the scheme, the user and the CA: a client's persistent session
lives in the cluster, so any node can resume it.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

import aiomqtt

from .errors import ConfigError

#: The environment variable holding the broker password when the URL names a user but no password.
PASSWORD_ENV = "MQTT_PASSWORD"
#: How a password is shown; a URL carrying exactly this as its password takes it from :data:`PASSWORD_ENV`.
MASK = "***"

_DEFAULT_PORTS = {False: 1883, True: 8883}
_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True}


def _mask(text: str) -> str:
    """``text`` (a broker URL that may not even parse) with any password replaced by ``***``.

    The password is whatever lies between the first ``:`` of the user part and the last ``@``.
    """
    head, sep, rest = text.partition("://")
    if not sep:
        head, rest = "", text
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    user = userinfo.partition(":")[0]
    return f"{head}{sep}{user}:{MASK}@{hostpart}"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class BrokerURL:
    """An MQTT broker address, parsed from ``mqtt[s]://[user[:password]@]host[:port]``.

    ``port`` 0 (the default) means the scheme's default: 1883, or 8883 with ``tls``. ``ca`` is
    a PEM file of the CA(s) to trust for ``tls`` instead of the system's; it is checked when
    the value is made, so a missing or unreadable file is a :class:`ConfigError` up front.
    """

    host: str
    port: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None
    #: The other nodes of a clustered broker, ``(host, port)`` each, in the order to try them.
    more: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.port == 0:
            object.__setattr__(self, "port", _DEFAULT_PORTS[self.tls])
        if not 0 < self.port < 65536:
            raise ConfigError(f"broker {self}: port {self.port} is out of range 1-65535")
        seen = {(self.host, self.port)}
        for host, port in self.more:
            if not 0 < port < 65536:
                raise ConfigError(f"broker {self}: port {port} is out of range 1-65535")
            if (host, port) in seen:
                raise ConfigError(f"broker {self}: node {_address(host, port)} is named twice")
            seen.add((host, port))
        if self.ca is not None:
            if not self.tls:
                raise ConfigError(
                    f"broker CA file {self.ca!r} given for {self}: a CA applies to mqtts:// (TLS) only"
                )
            _check_ca(self.ca)

    @classmethod
    def parse(cls, url: str, *, ca: str | os.PathLike[str] | None = None) -> BrokerURL:
        """Parse a broker URL; raise :class:`ConfigError` saying what is wrong (password masked).

        Several comma-separated URLs are the nodes of one clustered broker: a node written
        without a scheme or a user takes the first node's. ``ca`` (the ``--broker-ca`` option)
        is a PEM CA file for an ``mqtts://`` URL. Without a password in the URL, a user's
        password is read from :data:`PASSWORD_ENV`.
        """
        pieces = [piece.strip() for piece in url.split(",")]
        shown = repr(",".join(_mask(piece) for piece in pieces))
        if len(pieces) > 1 and not all(pieces):
            raise ConfigError(f"broker URL {shown}: an empty node in the comma-separated list")
        first = _parse_node(pieces[0], shown, scheme=None)
        more: list[tuple[str, int]] = []
        scheme = "mqtts" if first["tls"] else "mqtt"
        for piece in pieces[1:]:
            node = _parse_node(piece, shown, scheme=scheme)
            if node["tls"] != first["tls"]:
                raise ConfigError(
                    f"broker URL {shown}: the nodes of one broker must all be mqtt:// or all mqtts://"
                )
            if node["username"] is not None and (node["username"], node["password"]) != (
                first["username"],
                first["password"],
            ):
                raise ConfigError(
                    f"broker URL {shown}: the nodes of one broker must share the user and password"
                )
            address = (node["host"], node["port"] or _DEFAULT_PORTS[first["tls"]])
            if address in more or address == (first["host"], first["port"] or _DEFAULT_PORTS[first["tls"]]):
                raise ConfigError(f"broker URL {shown}: node {_address(*address)} is named twice")
            more.append(address)
        return cls(**first, ca=os.fspath(ca) if ca is not None else None, more=tuple(more))

    @property
    def nodes(self) -> tuple[BrokerURL, ...]:
        """Each node of this broker as a one-node URL (the same scheme, user and CA), in order."""
        if not self.more:
            return (self,)
        return (
            replace(self, more=()),
            *(replace(self, host=host, port=port, more=()) for host, port in self.more),
        )

    @property
    def address(self) -> str:
        """The first node's ``host:port`` (brackets around an IPv6 host)."""
        return _address(self.host, self.port)

    def __str__(self) -> str:
        """The URL with the password masked, e.g. ``mqtts://user:***@host:8883``; nodes comma-separated."""
        user = ""
        if self.username is not None:
            user = quote(self.username, safe="") + (f":{MASK}" if self.password else "") + "@"
        scheme = "mqtts" if self.tls else "mqtt"
        first = f"{scheme}://{user}{self.address}"
        return ",".join([first, *(f"{scheme}://{_address(h, p)}" for h, p in self.more)])

    def __repr__(self) -> str:
        ca = f", ca={self.ca!r}" if self.ca is not None else ""
        return f"BrokerURL({str(self)!r}{ca})"

    def client(self, *, identifier: str, clean_session: bool, timeout: float) -> aiomqtt.Client:
        """An aiomqtt client for this broker (TLS if ``mqtts://``) with Nagle's algorithm off.

        Inside :func:`~contract.reconnect.stay_connected` for this broker, the client is for the
        node the loop is at; elsewhere for the first node. paho does not set TCP_NODELAY; without it, small
        PUBLISH/PUBACK packets wait for delayed ACKs (about 40 ms on Linux loopback) whenever
        one is already in flight. The CA file is loaded when the client connects, in aiomqtt's
        connect thread.
        """
        link = _current_link.get()
        node = link.node if link is not None and link.broker is self else self
        return _Client(
            node.host,
            node.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            clean_session=clean_session,
            keepalive=10,
            timeout=timeout,
            tls_params=aiomqtt.TLSParameters(ca_certs=self.ca) if self.tls else None,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_node(text: str, shown: str, *, scheme: str | None) -> dict[str, Any]:
    """One node of a broker URL as :class:`BrokerURL` fields; ``scheme`` is the default scheme."""
    parts = urlsplit(text if "://" in text else f"{scheme or 'mqtt'}://{text}")
    name = parts.scheme.lower()
    if name not in _SCHEMES:
        raise ConfigError(f"broker URL {shown}: scheme must be mqtt:// or mqtts:// (got {name!r})")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"broker URL {shown}: invalid port (a number 1-65535 expected)") from None
    if port == 0:
        raise ConfigError(f"broker URL {shown}: invalid port 0 (a number 1-65535 expected)")
    if not parts.hostname:
        raise ConfigError(f"broker URL {shown}: missing host")
    if parts.path not in ("", "/"):
        raise ConfigError(f"broker URL {shown}: unexpected path after host[:port]")
    if parts.query or parts.fragment:
        raise ConfigError(f"broker URL {shown}: unexpected query or fragment")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username is None and password is not None:
        raise ConfigError(f"broker URL {shown}: a password needs a user name")
    if username is not None and password in (None, MASK):
        from_env = os.environ.get(PASSWORD_ENV)
        if password == MASK and not from_env:
            raise ConfigError(
                f"broker URL {shown}: the password is masked ({MASK}); give the real one or set {PASSWORD_ENV}"
            )
        password = from_env or None
    tls = _SCHEMES[name]
    return {"host": parts.hostname, "port": port or 0, "username": username, "password": password, "tls": tls}


def _check_ca(path: str) -> None:
    """Raise :class:`ConfigError` unless ``path`` is a readable file of PEM certificates."""
    if not os.path.exists(path):
        raise ConfigError(f"broker CA file {path!r}: no such file")
    if not os.path.isfile(path):
        raise ConfigError(f"broker CA file {path!r}: not a file")
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"broker CA file {path!r}: no PEM certificate in it ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"broker CA file {path!r}: cannot read it ({exc.strerror or exc})") from None


@dataclass(slots=True)
class _Link:
    """What :func:`~contract.reconnect.stay_connected` knows of the link being made; the client
    reports its connect."""

    who: str
    broker: BrokerURL
    log: logging.Logger
    up: bool = False
    was_up: bool = False
    failures: int = 0
    at: int = 0  # which of the broker's nodes the link is made to

    @property
    def node(self) -> BrokerURL:
        """The node the link is (being) made to."""
        return self.broker.nodes[self.at]

    def connected(self) -> None:
        after = (
            f" after {self.failures} failed attempt{'s' if self.failures != 1 else ''}"
            if self.failures
            else ""
        )
        self.log.info(
            "%s: %s to %s%s", self.who, "reconnected" if self.was_up else "connected", self.node, after
        )
        self.up = self.was_up = True
        self.failures = 0


_current_link: ContextVar[_Link | None] = ContextVar("broker_link", default=None)


class _Client(aiomqtt.Client):
    """aiomqtt's client, telling the surrounding :func:`~contract.reconnect.stay_connected` (if
    any) that it connected."""

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        link = _current_link.get()
        if link is not None:
            link.connected()
        return self
