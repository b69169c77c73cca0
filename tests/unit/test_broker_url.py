"""BrokerURL parsing, default ports, TLS and CA options, MQTT_PASSWORD, and password masking (no broker)."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from contract import BrokerURL, ConfigError, ContractError
from contract.broker import MASK, PASSWORD_ENV
from contract.reconnect import describe

SECRET = "hunter2-S3cret"


@pytest.fixture(autouse=True)
def no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without MQTT_PASSWORD, whatever the environment running them has."""
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A PEM file with a CA certificate in it (the one the system trusts first will do)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            target = tmp_path / "ca.pem"
            target.write_bytes(Path(candidate).read_bytes())
            return target
    pytest.skip("no system CA bundle to copy a PEM certificate from")


@pytest.mark.parametrize(
    ("text", "host", "port", "tls"),
    [
        ("mqtt://broker.example", "broker.example", 1883, False),
        ("mqtt://broker.example:1884", "broker.example", 1884, False),
        ("mqtts://broker.example", "broker.example", 8883, True),
        ("mqtts://broker.example:443", "broker.example", 443, True),
        ("MQTTS://Broker.Example/", "broker.example", 8883, True),
        ("tcp://127.0.0.1", "127.0.0.1", 1883, False),
        ("127.0.0.1:1999", "127.0.0.1", 1999, False),
        ("mqtt://[::1]:1999", "::1", 1999, False),
        ("  mqtt://h  ", "h", 1883, False),
    ],
)
def test_parse_hosts_ports_and_schemes(text: str, host: str, port: int, tls: bool) -> None:
    url = BrokerURL.parse(text)
    assert (url.host, url.port, url.tls, url.ca) == (host, port, tls, None)
    assert url.username is None and url.password is None


def test_constructor_defaults_port_by_scheme() -> None:
    assert BrokerURL(host="h").port == 1883
    assert BrokerURL(host="h", tls=True).port == 8883
    assert BrokerURL(host="h", port=2000, tls=True).port == 2000


def test_user_and_password_from_url_are_unquoted() -> None:
    url = BrokerURL.parse("mqtt://al%40ice:p%3Ass%40w@h:1884")
    assert (url.username, url.password) == ("al@ice", "p:ss@w")


def test_str_and_repr_mask_the_password() -> None:
    url = BrokerURL.parse(f"mqtts://alice:{SECRET}@broker.example")
    assert str(url) == "mqtts://alice:***@broker.example:8883"
    assert repr(url) == "BrokerURL('mqtts://alice:***@broker.example:8883')"
    assert SECRET not in f"{url} {url!r} {url!s} {[url]} { ({'b': url}) }"
    assert url.password == SECRET


def test_str_without_credentials_and_with_user_only() -> None:
    assert str(BrokerURL.parse("mqtt://h")) == "mqtt://h:1883"
    assert str(BrokerURL.parse("mqtt://alice@h:1")) == "mqtt://alice@h:1"
    assert str(BrokerURL.parse("mqtt://[::1]")) == "mqtt://[::1]:1883"
    assert str(BrokerURL(host="h", tls=True)) == "mqtts://h:8883"


def test_str_parses_back_to_the_same_address() -> None:
    url = BrokerURL.parse("mqtts://al%40ice@[::1]:1999")
    assert BrokerURL.parse(str(url)) == url


def test_password_from_environment_when_url_has_user_but_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    url = BrokerURL.parse("mqtt://alice@h")
    assert (url.username, url.password) == ("alice", SECRET)
    assert str(url) == "mqtt://alice:***@h:1883"
    assert SECRET not in repr(url)


def test_password_in_url_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert BrokerURL.parse(f"mqtt://alice:{SECRET}@h").password == SECRET


def test_environment_password_is_ignored_without_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    url = BrokerURL.parse("mqtt://h")
    assert url.username is None and url.password is None


def test_user_without_any_password() -> None:
    url = BrokerURL.parse("mqtt://alice@h")
    assert (url.username, url.password) == ("alice", None)


def test_masked_password_is_taken_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL copied from a log line (``user:***@``) works when MQTT_PASSWORD holds the password."""
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    assert BrokerURL.parse(f"mqtt://alice:{MASK}@h").password == SECRET


def test_masked_password_without_environment_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"masked.*MQTT_PASSWORD"):
        BrokerURL.parse(f"mqtt://alice:{MASK}@h")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"http://alice:{SECRET}@h", r"scheme must be mqtt:// or mqtts:// \(got 'http'\)"),
        (f"mqtt://alice:{SECRET}@h:notaport", "invalid port"),
        (f"mqtt://alice:{SECRET}@h:70000", "invalid port"),
        (f"mqtt://alice:{SECRET}@h:0", "invalid port 0"),
        (f"mqtt://alice:{SECRET}@", "missing host"),
        (f"mqtt://alice:{SECRET}@h/topic", "unexpected path"),
        (f"mqtt://alice:{SECRET}@h?x=1", "unexpected query"),
        (f"mqtt://:{SECRET}@h", "a password needs a user name"),
        (f"mqtt://alice:{SECRET}@a:1883,,b:1883", "an empty node"),
        (f"mqtt://alice:{SECRET}@a:1883,", "an empty node"),
        (f"mqtt://alice:{SECRET}@a,mqtts://b", "all be mqtt:// or all mqtts://"),
        (f"mqtt://alice:{SECRET}@a,mqtt://bob:x@b", "share the user and password"),
        (f"mqtt://alice:{SECRET}@a,b:0", "invalid port 0"),
        (f"mqtt://alice:{SECRET}@a:1883,a", "named twice"),
        (f"mqtt://alice:{SECRET}@a,http://b", "scheme must be"),
        # An unquoted '/' in the password: urlsplit sees host "alice", port "hunter2-..."
        (f"mqtt://alice:{SECRET}/x@h", "invalid port"),
        (f"mqtt://alice:1234/{SECRET}@h", "unexpected path"),
    ],
)
def test_bad_urls_are_config_errors_without_the_password(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        BrokerURL.parse(text)
    assert isinstance(info.value, ContractError)
    shown = str(info.value)
    assert shown.startswith("broker URL '")
    assert SECRET not in shown and "1234/" not in shown
    assert f"alice:{MASK}@" in shown or f":{MASK}@" in shown


def test_bad_url_without_password_is_shown_as_given() -> None:
    with pytest.raises(ConfigError, match=r"broker URL 'mqtt://h:x': invalid port"):
        BrokerURL.parse("mqtt://h:x")


def test_ca_file_for_mqtts(ca_file: Path) -> None:
    url = BrokerURL.parse("mqtts://h", ca=ca_file)
    assert url.ca == str(ca_file) and url.tls
    assert repr(url) == f"BrokerURL('mqtts://h:8883', ca={str(ca_file)!r})"
    assert str(url) == "mqtts://h:8883"
    assert BrokerURL.parse("mqtts://h", ca=str(ca_file)) == url


def test_ca_file_with_plain_mqtt_is_an_error(ca_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtts:// \(TLS\) only"):
        BrokerURL.parse("mqtt://h", ca=ca_file)


def test_missing_ca_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=r"broker CA file '.*nope\.pem': no such file"):
        BrokerURL.parse("mqtts://h", ca=missing)


def test_ca_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a file"):
        BrokerURL.parse("mqtts://h", ca=tmp_path)


def test_ca_file_without_a_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        BrokerURL.parse("mqtts://h", ca=junk)


def test_ca_error_does_not_show_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerURL.parse(f"mqtts://alice:{SECRET}@h", ca=tmp_path / "nope.pem")
    assert SECRET not in str(info.value)


async def test_client_factory_uses_tls_and_ca(ca_file: Path) -> None:
    url = BrokerURL.parse("mqtts://alice:pw@h", ca=ca_file)
    client = url.client(identifier="x", clean_session=True, timeout=1)
    assert isinstance(client, aiomqtt.Client)
    assert client._tls_params is not None and client._tls_params.ca_certs == str(ca_file)
    plain = BrokerURL.parse("mqtt://h").client(identifier="x", clean_session=True, timeout=1)
    assert plain._tls_params is None


def test_describe_authentication_refusal_is_readable() -> None:
    refused = MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=135))
    reason = describe(refused)
    assert reason.startswith("refused by the broker: Not authorized (CONNACK code 135)")
    assert "MQTT_PASSWORD" in reason
    old_style = MqttConnectError(4)
    assert "Bad username or password" in describe(old_style)
    assert "CONNACK code 4" in describe(old_style)


def test_describe_socket_errors_and_empty_messages() -> None:
    assert describe(aiomqtt.MqttError("[Errno 111] Connection refused")) == "Connection refused"
    assert describe(aiomqtt.MqttError()) == "MqttError"


def test_no_password_in_log_output_of_str(caplog: pytest.LogCaptureFixture) -> None:
    url = BrokerURL.parse(f"mqtt://alice:{SECRET}@h")
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("broker %s (%r)", url, url)
    assert SECRET not in caplog.text and "alice:***@h:1883" in caplog.text


def test_comma_separated_nodes_share_scheme_user_and_ca(
    ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes written bare take the first node's scheme, user and password; their own default port."""
    url = BrokerURL.parse(f"mqtts://alice:{SECRET}@a, b:9000 ,mqtts://c", ca=ca_file)
    assert (url.host, url.port, url.more) == ("a", 8883, (("b", 9000), ("c", 8883)))
    assert [(n.host, n.port, n.username, n.password, n.tls, n.ca, n.more) for n in url.nodes] == [
        ("a", 8883, "alice", SECRET, True, str(ca_file), ()),
        ("b", 9000, "alice", SECRET, True, str(ca_file), ()),
        ("c", 8883, "alice", SECRET, True, str(ca_file), ()),
    ]
    shown = f"mqtts://alice:{MASK}@a:8883,mqtts://b:9000,mqtts://c:8883"
    assert str(url) == shown and SECRET not in repr(url)
    # What is printed parses back to the same broker once the password is in the environment.
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    assert BrokerURL.parse(shown, ca=ca_file) == url
    # A node repeating the same user and password is the same broker.
    assert BrokerURL.parse(f"mqtts://alice:{SECRET}@a,mqtts://alice:{SECRET}@b", ca=ca_file).more == (
        ("b", 8883),
    )


def test_one_node_broker_is_its_own_only_node() -> None:
    url = BrokerURL.parse("mqtt://h:1999")
    assert url.nodes == (url,) and url.more == ()


async def test_client_outside_the_reconnect_loop_is_for_the_first_node() -> None:
    client = BrokerURL.parse("mqtt://a:1001,b:1002").client(identifier="x", clean_session=True, timeout=1)
    assert (client._hostname, client._port) == ("a", 1001)
