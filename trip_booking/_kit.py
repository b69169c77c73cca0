"""What the four trip services share: a SQLite table of JSON documents with an outbox, the broker
link (subscribe, then publish the outbox at QoS 1, reconnecting with backoff) and the HTTP app.

A service writes a document and the event that tells of it in one transaction; the event goes
to the broker after the commit, and leaves the outbox once the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import aiomqtt
from aiohttp import web

from contract import BrokerURL, cancel_and_wait, is_valid_workflow_id, serve_app, stay_connected, subscribe

Doc = dict[str, Any]
log = logging.getLogger("trip_booking")
MAX_EVENT_BYTES = 64 * 1024
MAX_IDS = 200


class Malformed(ValueError):
    """A request or an event without the expected shape (a 400, or an event ignored)."""


def field(doc: object, path: str, kind: type | tuple[type, ...]) -> Any:
    """``doc``'s value at the dotted ``path`` if it is a ``kind`` (a bool is no number, a number is finite)."""
    value = doc
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise Malformed(f"{path} is missing")
        value = value[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise Malformed(f"{path} must be {' or '.join(k.__name__ for k in kinds)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Malformed(f"{path} must be a finite number")
    return value


def trip_id(doc: object, path: str) -> str:
    """A trip id at ``path``: ``[A-Za-z0-9._:-]{1,128}``, not '.' or '..'."""
    value: str = field(doc, path, str)
    if not is_valid_workflow_id(value):
        raise Malformed(f"{path} is not a trip id ([A-Za-z0-9._:-]{{1,128}}, not '.' or '..')")
    return value


def ids_param(request: web.Request, name: str) -> list[str]:
    """The distinct trip ids of query parameter ``name`` (comma-joined, repeatable), at most :data:`MAX_IDS`."""
    ids = list(dict.fromkeys(i for value in request.query.getall(name, []) for i in value.split(",")))
    if not ids:
        raise Malformed(f"query parameter {name} is missing")
    if len(ids) > MAX_IDS:
        raise Malformed(f"at most {MAX_IDS} ids in {name}")
    bad = next((i for i in ids if not is_valid_workflow_id(i)), None)
    if bad is not None:
        raise Malformed(f"{name}: {bad[:140]!r} is not a trip id ([A-Za-z0-9._:-]{{1,128}}, not '.' or '..')")
    return ids


def _no_constant(name: str) -> Any:
    raise Malformed(f"{name} is not JSON")


def parse(data: bytes) -> Doc:
    """A JSON object (no NaN or Infinity) from ``data``."""
    try:
        doc = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Malformed("not JSON") from None
    if not isinstance(doc, dict):
        raise Malformed("not a JSON object")
    return doc


class Store:
    """Documents by kind and trip id (SQLite, WAL), and the events waiting to be published."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS docs (kind TEXT, id TEXT, doc TEXT NOT NULL, PRIMARY KEY (kind, id));"
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, payload TEXT);"
        )
        self.pending = asyncio.Event()

    def get(self, kind: str, key: str) -> Doc | None:
        row = self.db.execute("SELECT doc FROM docs WHERE kind = ? AND id = ?", (kind, key)).fetchone()
        return json.loads(row[0]) if row else None

    def get_many(self, kind: str, keys: list[str]) -> list[Doc]:
        """The documents of ``keys`` that exist, in the order of ``keys``."""
        return [doc for key in keys if (doc := self.get(kind, key)) is not None]

    def put(
        self, kind: str, key: str, doc: Doc, *, event: tuple[str, Doc] | None = None, new: bool = False
    ) -> bool:
        """Write ``doc`` (only if there is none when ``new``) and queue ``event``; False if nothing was written."""
        verb = "INSERT OR IGNORE" if new else "INSERT OR REPLACE"
        with self.db:
            written = self.db.execute(
                f"{verb} INTO docs VALUES (?, ?, ?)", (kind, key, json.dumps(doc))
            ).rowcount
            if written and event is not None:
                self.db.execute(
                    "INSERT INTO outbox (topic, payload) VALUES (?, ?)", (event[0], json.dumps(event[1]))
                )
        if written and event is not None:
            self.pending.set()
        return bool(written)

    def outbox(self) -> list[tuple[int, str, str]]:
        return self.db.execute("SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT 100").fetchall()

    def sent(self, seq: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except Malformed as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response({"error": exc.reason.lower()}, status=exc.status, headers=allow)


async def json_body(request: web.Request) -> Doc:
    """The request's JSON object."""
    try:
        return parse(await request.read())
    except Malformed as exc:
        raise Malformed(f"the body is {exc}") from None


class Service:
    """One service: its store, its HTTP app (``GET /healthz`` included) and its broker link."""

    name: ClassVar[str]
    topics: ClassVar[tuple[str, ...]]

    def __init__(self, *, db: str | Path, broker: BrokerURL) -> None:
        self.store = Store(db)
        self.broker = broker
        self.subscribed = False
        self.identifier = f"trip-{self.name}-{hashlib.sha1(str(Path(db).resolve()).encode(), usedforsecurity=False).hexdigest()[:12]}"
        self.app = web.Application(middlewares=[_json_errors])
        self.app.router.add_get("/healthz", self._healthz)
        self.routes(self.app.router)

    def routes(self, router: web.UrlDispatcher) -> None:
        """Add the service's own routes."""
        raise NotImplementedError

    def handle(self, topic: str, event: Doc) -> None:
        """Act on ``event``, received through the subscription ``topic`` (one of :attr:`topics`)."""
        raise NotImplementedError

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"service": self.name, "subscribed": self.subscribed})

    @contextlib.asynccontextmanager
    async def running(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve HTTP and keep the broker link until the block ends; yields the base URL."""
        link = asyncio.create_task(stay_connected(self._link, broker=self.broker, who=self.name, log=log))
        try:
            async with serve_app(self.app, host, port) as url:
                yield url
        finally:
            await cancel_and_wait(link)
            self.store.db.close()

    async def _link(self) -> None:
        try:
            async with self.broker.client(
                identifier=self.identifier, clean_session=False, timeout=10
            ) as client:
                await subscribe(client, list(self.topics))
                self.subscribed = True
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._publish(client))
                    async for message in client.messages:
                        self._receive(message)
        finally:
            self.subscribed = False

    async def _publish(self, client: aiomqtt.Client) -> None:
        while True:
            self.store.pending.clear()
            rows = self.store.outbox()
            for seq, topic, payload in rows:
                await client.publish(topic, payload, qos=1)
                self.store.sent(seq)
            if not rows:
                await self.store.pending.wait()

    def _receive(self, message: aiomqtt.Message) -> None:
        topic = next((t for t in self.topics if message.topic.matches(t)), message.topic.value)
        try:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_EVENT_BYTES:
                raise Malformed(f"not a JSON object of at most {MAX_EVENT_BYTES} bytes")
            self.handle(topic, parse(payload))
        except ValueError as exc:
            log.warning("%s: ignored an event on %s: %s", self.name, message.topic.value, str(exc)[:200])
        except Exception:  # a fault of ours, not the sender's: logged, and the service goes on
            log.exception("%s: failed to handle an event on %s", self.name, message.topic.value)
