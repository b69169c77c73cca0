"""Hardening of the participants' HTTP side: inbound bearer auth, hostile JSON bodies, /openapi.json.

Every test drives a real participant server (port 0, a real SQLite file, the session's
Mosquitto); the CLI tests run ``python -m participants`` as a real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from contract import WORKFLOW_ID_PATTERN, BatchBody
from order_saga import ORDER, PAYMENT
from order_saga.broker import MosquittoBroker
from order_saga.cli import CATALOG
from order_saga.saga import OrderRequest
from participants import NoSettings, OpenAPIPaths, ParticipantService, ParticipantSpec
from participants.cli import build_parser
from participants.http import MAX_BATCH, create_app
from participants.openapi import json_response

from ..support import Listener, ParticipantProcess, config, counts, order_body

TOKEN = "s3cret-Token_42"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = order_body("happy")


@dataclasses.dataclass
class Running:
    service: ParticipantService
    http: aiohttp.ClientSession
    db: Path

    @property
    def url(self) -> str:
        return self.service.url

    def rows(self, table: str) -> int:
        """Rows in one of the service's SQLite tables, read through a connection of our own."""
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@contextlib.asynccontextmanager
async def running(
    spec: ParticipantSpec[Any], broker: MosquittoBroker, prefix: str, tmp: Path, *, token: str | None = None
) -> AsyncIterator[Running]:
    db = tmp / f"{spec.name}.sqlite3"
    cfg = dataclasses.replace(config(broker.url, prefix, db), token=token)
    async with ParticipantService(spec, config=cfg) as svc, aiohttp.ClientSession() as http:
        async with asyncio.timeout(15):
            await svc.wait_ready()
        yield Running(svc, http, db)


@pytest.fixture
async def guarded(session_broker: MosquittoBroker, prefix: str, tmp_path: Path) -> AsyncIterator[Running]:
    """The order service with a bearer token configured."""
    async with running(ORDER, session_broker, prefix, tmp_path, token=TOKEN) as r:
        yield r


@pytest.fixture
async def order(session_broker: MosquittoBroker, prefix: str, tmp_path: Path) -> AsyncIterator[Running]:
    """The order service without authentication."""
    async with running(ORDER, session_broker, prefix, tmp_path) as r:
        yield r


@pytest.fixture
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if anything logged an error or a traceback while it ran."""
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


async def _raw_get(url: str, path: str, header: bytes) -> tuple[int, dict[str, str]]:
    """One GET sent byte for byte (aiohttp's client will not send a header that is not latin-1)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode() + header + b"\r\n\r\n")
    await writer.drain()
    head = (await reader.read()).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    writer.close()
    headers = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), {k.lower(): v for k, v in headers.items()}


# -- 1. inbound auth -------------------------------------------------------------------------

GUARDED_ROUTES = [
    ("GET", "/status/some-order"),
    ("GET", "/status?workflow_id=some-order"),
    ("GET", "/status/healthz"),  # a workflow named "healthz": exempt by handler, not by path
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("POST", "/orders"),
    ("GET", "/no/such/route"),  # never reveals which routes exist
    ("DELETE", "/orders"),
    ("GET", "/healthz/"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "basic", "empty", "longer", "shorter", "no-scheme"],
)
async def test_every_route_but_health_needs_the_bearer_token(
    guarded: Running, method: str, path: str, headers: dict[str, str]
) -> None:
    async with guarded.http.request(method, guarded.url + path, headers=headers, json=GOOD) as r:
        assert r.status == 401
        assert r.content_type == "application/problem+json"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        body = await r.json()
    assert body["status"] == 401
    assert TOKEN not in json.dumps(body)


async def test_two_authorization_headers_are_refused(guarded: Running) -> None:
    status, headers = await _raw_get(
        guarded.url, "/status/x", f"Authorization: Bearer {TOKEN}\r\nAuthorization: Bearer {TOKEN}".encode()
    )
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "value",
    [b"\xff\xfe", TOKEN.encode() + b"\xc3\xa9", b"\xc3(", b"\xe2\x82\xac", TOKEN.encode() + b"\x80"],
    ids=["latin-1", "utf8-suffix", "invalid-utf8", "euro", "stray-continuation"],
)
async def test_token_that_is_not_ascii_is_a_401_not_a_500(
    guarded: Running, no_error_logs: None, value: bytes
) -> None:
    status, headers = await _raw_get(guarded.url, "/status/x", b"Authorization: Bearer " + value)
    assert status == 401
    assert headers["content-type"].startswith("application/problem+json")


async def test_health_routes_stay_open_and_the_right_token_opens_the_rest(guarded: Running) -> None:
    for path in ("/healthz", "/readyz"):
        async with guarded.http.get(guarded.url + path) as r:
            assert r.status == 200, path
    async with guarded.http.get(f"{guarded.url}/status/never-seen", headers=AUTH) as r:
        assert r.status == 404
        assert r.content_type == "application/problem+json"
    lowercase = {"Authorization": f"bearer {TOKEN}"}
    async with guarded.http.post(f"{guarded.url}/orders", json=GOOD, headers=lowercase) as r:
        assert r.status == 202
        workflow_id = (await r.json())["workflow_id"]
    async with guarded.http.get(f"{guarded.url}/status/{workflow_id}", headers=AUTH) as r:
        assert r.status == 200
    async with guarded.http.get(f"{guarded.url}/no/such/route", headers=AUTH) as r:
        assert (r.status, r.content_type) == (404, "application/problem+json")
    async with guarded.http.delete(f"{guarded.url}/orders", headers=AUTH) as r:
        assert (r.status, r.content_type) == (405, "application/problem+json")
        assert "POST" in r.headers["Allow"]


async def test_refused_order_publishes_and_stores_nothing(
    guarded: Running, session_broker: MosquittoBroker, prefix: str
) -> None:
    async with Listener(session_broker.url, f"{prefix}/#") as heard:
        async with guarded.http.post(f"{guarded.url}/orders", json={**GOOD, "order_id": "sneaky"}) as r:
            assert r.status == 401
        await asyncio.sleep(0.3)
    assert heard.messages == []
    assert guarded.service.store.status("sneaky") is None
    assert (guarded.rows("workflows"), guarded.rows("outbox")) == (0, 0)
    assert (await counts(guarded.http, guarded.url)).get("published", 0) == 0


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "participants", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "variable", "value"),
    [
        ((), "PARTICIPANT_TOKEN", ""),
        (("--token-env", "MY_TOKEN"), "MY_TOKEN", ""),
        (("--token-env", "MY_TOKEN"), "MY_TOKEN", "   "),
        (("--token-env", "MY_TOKEN"), "MY_TOKEN", "two words"),
    ],
)
@pytest.mark.slow
def test_set_but_unusable_token_variable_stops_start_up_with_one_line(
    tmp_path: Path, args: tuple[str, ...], variable: str, value: str
) -> None:
    env = {**os.environ, variable: value}
    done = _cli("payment", "--port", "0", "--db", str(tmp_path / "p.sqlite3"), *args, env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0] and "error" in lines[0]
    assert value.strip() == "" or value not in lines[0]  # the secret is not echoed
    assert not (tmp_path / "p.sqlite3").exists()


def test_token_env_option_is_documented() -> None:
    text = build_parser(CATALOG, PAYMENT).format_help()
    assert "--token-env NAME" in text
    assert "PARTICIPANT_TOKEN" in text


@pytest.mark.parametrize("token", [TOKEN, None])
@pytest.mark.slow
async def test_cli_participant_reports_and_enforces_its_auth(
    session_broker: MosquittoBroker,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    token: str | None,
) -> None:
    monkeypatch.delenv("PARTICIPANT_TOKEN", raising=False)
    if token is not None:
        monkeypatch.setenv("ORDER_TOKEN", token)
    proc = ParticipantProcess(
        "order", broker=session_broker.url, prefix=prefix, db=tmp_path / "order.sqlite3",
        extra=("--token-env", "ORDER_TOKEN"),
    )  # fmt: skip
    proc.start()
    try:
        async with aiohttp.ClientSession() as http:
            await proc.wait_ready(http)  # /readyz answers without a token
            async with http.get(f"{proc.url}/status/x") as r:
                assert r.status == (401 if token else 404)
            async with http.get(f"{proc.url}/status/x", headers=AUTH) as r:
                assert r.status == 404
    finally:
        proc.stop()
    started = [line for line in proc.log.read_text().splitlines() if "listening on" in line]
    assert len(started) == 1
    assert started[0].endswith("auth: bearer token" if token else "auth: off")
    assert TOKEN not in proc.log.read_text()


# -- 2. hostile order bodies -----------------------------------------------------------------

HOSTILE = {
    "array-5000-deep": b"[" * 5000 + b"]" * 5000,
    "array-20000-deep": b"[" * 20000,
    "object-10000-deep": b'{"":' * 10000 + b"1" + b"}" * 10000,
    "object-7000-deep-under-amount": b'{"amount":' + b'{"a":' * 7000 + b"1" + b"}" * 7001,
    "int-4301-digits": b"1" * 4301,
    "amount-4301-digits": json.dumps({**GOOD, "amount": 0})
    .replace('"amount": 0', '"amount": ' + "9" * 4301)
    .encode(),
    "invalid-utf8": b'{"currency": "\xff\xfe"}',
    "utf16-of-a-valid-order": json.dumps(GOOD).encode("utf-16"),
    "utf8-bom": b"\xef\xbb\xbf" + json.dumps(GOOD).encode(),
    "nan": json.dumps({**GOOD, "amount": float("nan")}).encode(),
    "repeated-member": json.dumps(GOOD).replace('"amount":', '"amount": 5, "amount":').encode(),
    "string": b'"an order"',
    "number": b"42",
    "null": b"null",
    "array": json.dumps([GOOD]).encode(),
    "empty": b"",
}


@pytest.mark.parametrize("body", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_hostile_order_body_is_a_400_and_publishes_nothing(
    order: Running, session_broker: MosquittoBroker, prefix: str, no_error_logs: None, body: bytes
) -> None:
    assert len(body) < 64 * 1024
    async with Listener(session_broker.url, f"{prefix}/#") as heard:
        async with order.http.post(
            f"{order.url}/orders", data=body, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
            assert r.content_type == "application/problem+json"
            problem = await r.json()
        await asyncio.sleep(0.2)
    assert problem["status"] == 400
    assert len(problem["detail"]) < 300
    assert heard.messages == []
    assert (order.rows("workflows"), order.rows("outbox")) == (0, 0)
    assert (await counts(order.http, order.url)).get("published", 0) == 0
    # The server is still fine afterwards.
    async with order.http.post(f"{order.url}/orders", json=GOOD) as r:
        assert r.status == 202


# -- 3. /openapi.json ------------------------------------------------------------------------


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): op for path, item in doc["paths"].items() for method, op in item.items()}


async def _document(r: Running, headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with r.http.get(f"{r.url}/openapi.json", headers=headers) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        return dict(await resp.json())


def _routes(svc: ParticipantService) -> set[tuple[str, str]]:
    app = create_app(svc)
    return {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


@pytest.mark.parametrize("spec", [ORDER, PAYMENT], ids=["order", "payment"])
async def test_openapi_describes_exactly_the_routes_served(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, spec: ParticipantSpec[Any]
) -> None:
    async with running(spec, session_broker, prefix, tmp_path) as r:
        doc = await _document(r)
        assert doc["openapi"] == "3.1.0"
        assert set(_operations(doc)) == _routes(r.service)
        for ref in _refs(doc):
            assert _resolve(doc, ref) is not None, ref
        assert ("/orders" in doc["paths"]) == (spec is ORDER)
        assert "securitySchemes" not in doc["components"]
        assert all("security" not in op and "401" not in op["responses"] for op in _operations(doc).values())


async def test_openapi_status_routes_follow_the_contract_models(order: Running) -> None:
    doc = await _document(order)
    single = doc["paths"]["/status/{workflow_id}"]["get"]
    assert single["parameters"][0]["schema"]["pattern"] == WORKFLOW_ID_PATTERN
    assert set(single["responses"]) == {"200", "400", "404"}
    for code in ("400", "404"):
        assert "application/problem+json" in single["responses"][code]["content"]
    expected = BatchBody.model_json_schema(ref_template="#/components/schemas/{model}")
    assert doc["components"]["schemas"]["StatusBody"] == expected["$defs"]["StatusBody"]
    assert (
        _resolve(doc, single["responses"]["200"]["content"]["application/json"]["schema"]["$ref"])
        == (expected["$defs"]["StatusBody"])
    )
    # One exploded object parameter: the batch form or the listing form, never both.
    query = doc["paths"]["/status"]["get"]["parameters"][0]
    assert (query["in"], query["style"], query["explode"], query["required"]) == ("query", "form", True, True)
    batch, listing = query["schema"]["oneOf"]
    assert batch["required"] == ["workflow_id"] and batch["additionalProperties"] is False
    assert batch["properties"]["workflow_id"]["maxItems"] == MAX_BATCH
    assert batch["properties"]["workflow_id"]["items"]["pattern"] == WORKFLOW_ID_PATTERN
    assert set(listing["properties"]) == {"state", "updated_before", "limit", "after"}
    assert listing["additionalProperties"] is False

    # What the server answers is what the document declares, status and content type.
    workflow_id = f"doc-{order.service.name}"
    async with order.http.post(f"{order.url}/orders", json={**GOOD, "order_id": workflow_id}) as r:
        assert r.status == 202
    probes = [
        ("get", f"/status/{workflow_id}", "/status/{workflow_id}"),
        ("get", "/status/never-seen", "/status/{workflow_id}"),
        ("get", "/status/bad%20id", "/status/{workflow_id}"),
        ("get", f"/status?workflow_id={workflow_id}&workflow_id=nope", "/status"),
        ("get", "/status?state=PENDING&limit=10", "/status"),
        ("get", f"/status?workflow_id={workflow_id}&limit=10", "/status"),
        ("post", f"/outbox/{workflow_id}/republish", "/outbox/{workflow_id}/republish"),
        ("post", "/outbox/bad%20id/republish", "/outbox/{workflow_id}/republish"),
        ("get", "/status", "/status"),
        ("get", "/healthz", "/healthz"),
        ("get", "/readyz", "/readyz"),
        ("get", "/openapi.json", "/openapi.json"),
    ]
    for method, path, template in probes:
        async with order.http.request(method, order.url + path) as r:
            declared = doc["paths"][template][method]["responses"]
            assert str(r.status) in declared, (path, r.status)
            assert r.content_type in declared[str(r.status)]["content"], (path, r.content_type)
            if path == f"/status/{workflow_id}":
                body = await r.json()
                assert set(expected["$defs"]["StatusBody"]["required"]) <= set(body)


async def test_openapi_order_route_matches_the_handlers_validation(order: Running) -> None:
    doc = await _document(order)
    post = doc["paths"]["/orders"]["post"]
    schema = _resolve(doc, post["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(OrderRequest.model_fields)
    assert set(schema["required"]) == {"amount", "currency", "items", "country"}
    assert schema["properties"]["amount"]["exclusiveMinimum"] == 0
    item = _resolve(doc, schema["properties"]["items"]["items"]["$ref"])
    assert item["properties"]["qty"]["type"] == "integer"
    assert {"202", "400", "409", "413", "422"} <= set(post["responses"])
    bodies: list[tuple[Any, str]] = [
        (GOOD, "202"),
        ({**GOOD, "order_id": "fixed-1"}, "202"),
        ({**GOOD, "order_id": "fixed-1", "amount": 3}, "409"),
        (b"[1]", "400"),
        ({**GOOD, "surprise": 1}, "422"),
        (b"{" + b'"pad":"' + b"x" * (70 * 1024) + b'"}', "413"),
    ]
    for body, code in bodies:
        kwargs: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body}
        async with order.http.post(f"{order.url}/orders", **kwargs) as r:
            assert str(r.status) == code
            assert r.content_type in post["responses"][code]["content"]
            if code == "202":
                assert r.headers["Location"] == f"/status/{(await r.json())['workflow_id']}"


async def test_openapi_with_auth_declares_bearer_everywhere_but_health(guarded: Running) -> None:
    async with guarded.http.get(f"{guarded.url}/openapi.json") as r:
        assert r.status == 401
    doc = await _document(guarded, AUTH)
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    operations = _operations(doc)
    assert set(operations) == _routes(guarded.service)
    for (path, _), op in operations.items():
        if path in ("/healthz", "/readyz"):
            assert "security" not in op and "401" not in op["responses"], path
        else:
            assert op["security"] == [{"bearer": []}], path
            unauthorized = _resolve(doc, op["responses"]["401"]["$ref"])
            assert "application/problem+json" in unauthorized["content"]
            assert "WWW-Authenticate" in unauthorized["headers"]
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref


async def _extra(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
    return aiohttp.web.json_response({"extra": True})


def _extra_routes(app: aiohttp.web.Application) -> None:
    app.router.add_get("/extra", _extra)


EXTRA_PATHS = OpenAPIPaths(
    paths={
        "/extra": {
            "get": {"responses": {"200": json_response("Extra", {"$ref": "#/components/schemas/Extra"})}}
        }
    },
    schemas={"Extra": {"type": "object", "properties": {"extra": {"type": "boolean"}}}},
)


@pytest.mark.parametrize("described", [True, False])
async def test_a_specs_own_routes_join_the_document_and_the_auth(
    session_broker: MosquittoBroker,
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    described: bool,
) -> None:
    """The framework stays generic: any spec's routes are guarded, and described if it says how."""
    spec = ParticipantSpec(
        name="extra",
        handlers={},
        settings=NoSettings(),
        routes=_extra_routes,
        openapi_paths=EXTRA_PATHS if described else None,
    )
    async with running(spec, session_broker, prefix, tmp_path, token=TOKEN) as r:
        async with r.http.get(f"{r.url}/extra") as resp:
            assert resp.status == 401
        async with r.http.get(f"{r.url}/extra", headers=AUTH) as resp:
            assert resp.status == 200
        doc = await _document(r, AUTH)
    undocumented = [
        rec for rec in caplog.records if "does not describe the routes served" in rec.getMessage()
    ]
    if described:
        assert doc["paths"]["/extra"]["get"]["security"] == [{"bearer": []}]
        assert "401" in doc["paths"]["/extra"]["get"]["responses"]
        assert _resolve(doc, "#/components/schemas/Extra")["type"] == "object"
        assert undocumented == []
    else:
        assert "/extra" not in doc["paths"]
        assert len(undocumented) == 1 and "/extra" in undocumented[0].getMessage()
