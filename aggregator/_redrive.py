"""Stalled workflows: finding them through the initiator, and redriving them.

A choreography has no orchestrator to retry from its state: if the broker loses events it had
acknowledged (a crash between its PUBACK and its next save), the saga waits for ever. The
aggregator sees every workflow whole, so it is where a stall shows: a view that is not in a
terminal state and whose newest part changed longer ago than ``stall_after_ms`` is
``stalled``. :class:`Stalls` finds them (the initiator lists the workflows still open at its
end, updated before that bound; each is viewed) and redrives one by asking every participant
to publish that workflow's events again, with their original ids: consumers' inboxes drop what
they already applied, and apply what was lost. ``serve --redrive auto`` runs :meth:`Stalls.run`:
each stalled workflow at most once per ``stall_after_ms``, at most ``MAX_REDRIVES_PER_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from cachetools import TTLCache

from contract import iso

from ._client import ParticipantClient
from ._fanout import Upstream
from .definition import Definition
from .errors import NoInitiator, NotSupported, PartFailure
from .metrics import Metrics
from .options import MAX_BATCH
from .schema import StallReason
from .view import View

log = logging.getLogger(__name__)

#: Auto redrive: at most this many workflows redriven per second (participants republish).
MAX_REDRIVES_PER_S = 20
#: Most workflows one scan looks at (pages of the initiator's listing).
SCAN_MAX = 10_000
_PAGE = 500

Views = Callable[[Sequence[str]], Awaitable[tuple[list[View], list[str]]]]


def record_stalled(metrics: Metrics, stalled: int, reasons: Mapping[str, int]) -> None:
    """Set the stalled-workflow gauges from a scan: how many are stalled, and why (every reason
    shown, 0 when none).

    Two scans call it, on purpose: :meth:`Stalls.find` (``--redrive auto``, which keeps the
    gauges current without anyone asking, and ``GET /workflows?stalled=true``) over up to
    ``SCAN_MAX`` listed workflows, and a complete :meth:`Fleet.summary`, the one count over every
    in-flight workflow (up to its budget), which keeps them current with ``--redrive off``
    (docs/howto/prometheus.md). They agree when the listing fits one scan and no ``limit``
    stopped it; else the gauges hold whichever ran last."""
    metrics.stalled.set(stalled)
    for reason in get_args(StallReason):
        metrics.stalled_by_reason.labels(reason).set(reasons.get(reason, 0))


class Stalls:
    """Finds stalled workflows and redrives them."""

    def __init__(
        self, *, definition: Definition, upstreams: Mapping[str, Upstream], views: Views, metrics: Metrics
    ) -> None:
        self._definition = definition
        self._upstreams = upstreams
        self._views = views
        self._metrics = metrics
        stall_s = definition.settings.stall_after_ms / 1000
        self._redriven: TTLCache[str, float] = TTLCache(maxsize=SCAN_MAX, ttl=max(stall_s, 1.0))
        self._cursor: str | None = None
        """Where the next resumed scan starts in the initiator's listing (None: at the oldest)."""

    def initiator(self) -> ParticipantClient:
        """The initiator's client, which lists workflows (:class:`NoInitiator` without one)."""
        initiator = self._definition.initiator
        if initiator is None:
            raise NoInitiator
        return self._upstreams[initiator].client

    async def find(self, limit: int = 100, *, resume: bool = False) -> list[View]:
        """Stalled workflows, oldest first (:class:`NoInitiator`, or :class:`PartFailure` if the initiator fails).

        One call looks at no more than ``SCAN_MAX`` of the initiator's open workflows. With
        ``resume``, it starts where the previous resumed call stopped (and from the oldest
        again once the listing is through): workflows that are over but that the initiator
        alone cannot tell from running ones (``CANCELLED`` while a compensation may still be
        due) pile up, and a scan that always began with the oldest would never get past them.
        """
        initiator = self._definition.initiator
        if initiator is None:
            raise NoInitiator
        stall_ms = self._definition.settings.stall_after_ms
        if stall_ms <= 0:
            return []
        before = iso(datetime.now(UTC) - timedelta(milliseconds=stall_ms))
        states = self._definition.open_initiator_states()
        client = self._upstreams[initiator].client
        ids: list[str] = []
        after = self._cursor if resume else None
        while len(ids) < SCAN_MAX:
            page = await client.listing(
                states=states, updated_before=before, limit=min(_PAGE, SCAN_MAX - len(ids)), after=after
            )
            ids += [s.workflow_id for s in page.statuses]
            after = page.next
            if after is None:
                break
        if resume:
            self._cursor = after  # None: the listing is through, the next scan starts again
        found: list[View] = []
        for start in range(0, len(ids), MAX_BATCH):
            views, _ = await self._views(ids[start : start + MAX_BATCH])
            found += [view for view in views if view.stalled]
            if len(found) >= limit:
                break
        record_stalled(
            self._metrics, len(found), Counter(v.stall.reason for v in found if v.stall is not None)
        )
        return found[:limit]

    async def redrive(self, workflow_id: str) -> dict[str, dict[str, Any]]:
        """Ask every participant to republish the workflow's events; what each answered."""
        names = list(self._upstreams)
        answers = await asyncio.gather(
            *(self._upstreams[n].client.republish(workflow_id) for n in names), return_exceptions=True
        )
        report: dict[str, dict[str, Any]] = {}
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, int):
                report[name] = {"republished": answer}
                self._metrics.redrives.labels(name, "ok").inc()
            elif isinstance(answer, PartFailure):
                report[name] = {"error": answer.kind, "detail": answer.detail}
                self._metrics.redrives.labels(name, "failed").inc()
            elif isinstance(answer, NotSupported):  # read through a mapping: nothing to ask
                report[name] = {"skipped": str(answer)}
            else:
                raise answer
        log.info(
            "redrove workflow %s: %s",
            workflow_id,
            ", ".join(
                f"{n} republished {r['republished']}"
                if "republished" in r
                else f"{n} {r.get('error', 'skipped')}"
                for n, r in report.items()
            ),
        )
        return report

    async def run(self) -> None:
        """``--redrive auto``: scan every half ``stall_after_ms`` (1 to 10 s) and redrive what is stalled."""
        interval = min(10.0, max(1.0, self._definition.settings.stall_after_ms / 2000))
        while True:
            await asyncio.sleep(interval)
            try:
                stalled = await self.find(limit=SCAN_MAX, resume=True)
            except PartFailure as failure:
                log.warning("redrive: cannot list stalled workflows: %s", failure)
                continue
            budget = int(MAX_REDRIVES_PER_S * interval)
            for view in stalled:
                if view.workflow_id in self._redriven:
                    continue  # once per stall_after_ms
                if budget <= 0:
                    break
                budget -= 1
                self._redriven[view.workflow_id] = time.monotonic()
                await self.redrive(view.workflow_id)
