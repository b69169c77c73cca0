"""A participant's local state in SQLite (WAL): workflows, history, outbox and inbox.

One connection, used only from the event loop's thread. Every write happens inside
:meth:`Store.transaction`, so a state change, the events it causes (outbox) and the event that
caused it (inbox) commit together or not at all. ``synchronous=FULL`` makes a commit durable
before the broker is acknowledged: a crash after the ack can never lose the effect.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workflows (
    workflow_id TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    workflow_id TEXT NOT NULL,
    version     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    at          TEXT NOT NULL,
    event       TEXT,
    cause       TEXT,
    PRIMARY KEY (workflow_id, version)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    sent_at     TEXT,
    workflow_id TEXT
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS inbox (
    event_id    TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS workflows_by_state ON workflows (state, updated_at, workflow_id);
CREATE INDEX IF NOT EXISTS workflows_by_update ON workflows (updated_at, workflow_id);
"""
# After _SCHEMA and _migrate: a database from before the column gets it first.
_OUTBOX_INDEX = "CREATE INDEX IF NOT EXISTS outbox_workflow ON outbox (workflow_id, seq);"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One transition of a workflow's local state."""

    state: str
    version: int
    at: str
    event: str | None = None
    """The id of the event this transition published (the first, when it published several)."""
    cause: str | None = None
    """The id of the event that caused this transition (None: a request started it)."""


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """This participant's local part of one workflow."""

    workflow_id: str
    state: str
    version: int
    updated_at: str
    data: dict[str, Any]
    history: tuple[HistoryEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An event committed for publishing."""

    seq: int
    topic: str
    payload: bytes


class Transaction:
    """The writes a handler may make; valid only inside :meth:`Store.transaction`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, workflow_id: str) -> WorkflowStatus | None:
        """The workflow's current local state, without history."""
        row = self.conn.execute(
            "SELECT workflow_id, state, version, updated_at, data FROM workflows WHERE workflow_id = ?",
            (workflow_id,),
        ).fetchone()
        return _status(row) if row else None

    def seen(self, event_id: str) -> bool:
        """Whether the inbox already holds ``event_id``."""
        return self.conn.execute("SELECT 1 FROM inbox WHERE event_id = ?", (event_id,)).fetchone() is not None

    def remember(self, event_id: str, type_: str, at: str) -> None:
        """Record ``event_id`` as applied (in the same transaction as its effects)."""
        self.conn.execute(
            "INSERT INTO inbox (event_id, type, received_at) VALUES (?, ?, ?)",
            (event_id, type_, at),
        )

    def put(self, status: WorkflowStatus, *, event: str | None = None, cause: str | None = None) -> None:
        """Write the workflow's new state and append its history entry: ``event`` is the id of
        the event the transition publishes, ``cause`` the id of the event that caused it."""
        self.conn.execute(
            "INSERT INTO workflows (workflow_id, state, version, updated_at, data) VALUES (?,?,?,?,?)"
            " ON CONFLICT (workflow_id) DO UPDATE SET state = excluded.state,"
            " version = excluded.version, updated_at = excluded.updated_at, data = excluded.data",
            (
                status.workflow_id,
                status.state,
                status.version,
                status.updated_at,
                json.dumps(status.data, separators=(",", ":")),
            ),
        )
        self.conn.execute(
            "INSERT INTO history (workflow_id, version, state, at, event, cause) VALUES (?, ?, ?, ?, ?, ?)",
            (status.workflow_id, status.version, status.state, status.updated_at, event, cause),
        )

    def enqueue(self, topic: str, payload: bytes, at: str, *, workflow_id: str | None = None) -> None:
        """Add an event to the outbox; the relay publishes it after the commit.

        ``workflow_id`` (the event's subject) is what :meth:`Store.republish` finds it by.
        """
        self.conn.execute(
            "INSERT INTO outbox (topic, payload, created_at, workflow_id) VALUES (?, ?, ?, ?)",
            (topic, payload, at, workflow_id),
        )


class Store:
    """The participant's SQLite database."""

    def __init__(self, path: str | Path, *, extra_schema: str = "") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA + extra_schema)
        self._migrate()
        self._conn.executescript(_OUTBOX_INDEX)

    def _migrate(self) -> None:
        """Bring a database made by an older version up to this schema."""
        recorded = {row[1] for row in self._conn.execute("PRAGMA table_info(history)")}
        if "cause" not in recorded:  # entries from before say nothing of their events
            with self.transaction() as tx:
                tx.conn.execute("ALTER TABLE history ADD COLUMN event TEXT")
                tx.conn.execute("ALTER TABLE history ADD COLUMN cause TEXT")
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(outbox)")}
        if "workflow_id" not in columns:
            with self.transaction() as tx:
                tx.conn.execute("ALTER TABLE outbox ADD COLUMN workflow_id TEXT")
                # The rows still kept name their workflow as the event's subject.
                tx.conn.execute(
                    "UPDATE outbox SET workflow_id = json_extract(CAST(payload AS TEXT), '$.subject')"
                    " WHERE json_valid(CAST(payload AS TEXT))"
                )

    def close(self) -> None:
        """Close the database; the store is unusable afterwards."""
        self._conn.close()

    @property
    def is_open(self) -> bool:
        """Whether the database answers a trivial query."""
        try:
            self._conn.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic unit of work: commits on normal exit, rolls back on any exception."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield Transaction(self._conn)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query`` on the store's connection, for a spec's own tables (one read transaction)."""
        self._conn.execute("BEGIN")
        try:
            return query(self._conn)
        finally:
            self._conn.execute("COMMIT")

    def status(self, workflow_id: str) -> WorkflowStatus | None:
        """The workflow's local state with its full history, or ``None`` if never seen."""
        found = self.statuses([workflow_id])
        return found[0] if found else None

    def statuses(self, workflow_ids: Sequence[str]) -> list[WorkflowStatus]:
        """The known workflows among ``workflow_ids`` (in that order), with histories."""
        ids = list(dict.fromkeys(workflow_ids))
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._conn.execute(
            "SELECT workflow_id, state, version, updated_at, data FROM workflows"
            f" WHERE workflow_id IN ({marks})",
            ids,
        ).fetchall()
        history: dict[str, list[HistoryEntry]] = {}
        for wf, state, version, at, event, cause in self._conn.execute(
            f"SELECT workflow_id, state, version, at, event, cause FROM history WHERE workflow_id IN ({marks})"
            " ORDER BY workflow_id, version",
            ids,
        ):
            history.setdefault(wf, []).append(HistoryEntry(state, version, at, event, cause))
        by_id = {row[0]: row for row in rows}
        return [replace(_status(by_id[wf]), history=tuple(history.get(wf, ()))) for wf in ids if wf in by_id]

    def page(
        self,
        *,
        states: Sequence[str],
        updated_before: str | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[WorkflowStatus]:
        """Up to ``limit`` workflows, oldest first by ``(updated_at, workflow_id)``, with histories.

        Only those in ``states`` (any state if empty), updated strictly before ``updated_before``
        (a time as :func:`contract.iso` writes it) and strictly after the position ``after``.
        """
        where: list[str] = []
        args: list[str | int] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        if updated_before is not None:
            where.append("updated_at < ?")
            args.append(updated_before)
        if after is not None:
            where.append("(updated_at > ? OR (updated_at = ? AND workflow_id > ?))")
            args += [after[0], after[0], after[1]]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        ids = [
            row[0]
            for row in self._conn.execute(
                f"SELECT workflow_id FROM workflows{clause} ORDER BY updated_at, workflow_id LIMIT ?",
                [*args, limit],
            )
        ]
        return self.statuses(ids)

    def republish(self, workflow_id: str) -> int:
        """Queue the outbox rows of ``workflow_id`` to be published again; how many there are.

        The rows keep their payloads, so the events go out with their original ids, in their
        original order. Rows already pruned (``outbox_retention_s`` after they were sent) are
        gone and not counted.
        """
        with self.transaction() as tx:
            return tx.conn.execute(
                "UPDATE outbox SET sent_at = NULL WHERE workflow_id = ?", (workflow_id,)
            ).rowcount

    def unsent(self, limit: int) -> list[OutboxRow]:
        """The oldest outbox rows not yet acknowledged by the broker."""
        return [
            OutboxRow(seq, topic, bytes(payload))
            for seq, topic, payload in self._conn.execute(
                "SELECT seq, topic, payload FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            )
        ]

    def unsent_count(self) -> int:
        """How many outbox rows the broker has not acknowledged yet (counted on the partial index
        of unsent rows: as cheap as the backlog is short)."""
        row = self._conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        return int(row[0])

    def mark_sent(self, seqs: Sequence[int], at: str) -> None:
        """Mark outbox rows as published (after the broker's PUBACK)."""
        with self.transaction() as tx:
            tx.conn.executemany("UPDATE outbox SET sent_at = ? WHERE seq = ?", [(at, seq) for seq in seqs])

    def prune(self, *, sent_before: str, inbox_before: str) -> None:
        """Drop outbox rows published before ``sent_before`` and older inbox ids (a bounded database).

        The inbox keeps ids far longer than any broker redelivery could take, which is what
        idempotence needs; published outbox rows are kept only to be republished (a redrive).
        """
        with self.transaction() as tx:
            tx.conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (sent_before,))
            tx.conn.execute("DELETE FROM inbox WHERE received_at < ?", (inbox_before,))

    def meta(self, key: str, default: str) -> str:
        """A persistent setting of this instance; stores ``default`` on first use."""
        with self.transaction() as tx:
            row = tx.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row:
                return str(row[0])
            tx.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, default))
            return default


def _status(row: tuple[Any, ...]) -> WorkflowStatus:
    workflow_id, state, version, updated_at, data = row
    return WorkflowStatus(workflow_id, state, version, updated_at, json.loads(data))
