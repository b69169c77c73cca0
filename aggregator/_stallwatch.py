"""Stalls raised and cleared: which workflows the views built here last showed stalled.

Every view the aggregator builds passes through :meth:`StallWatch.saw`. A workflow seen stalled
that was not stalled in its previous view (or was never seen) raises a stall; one seen stalled
that a later view shows moving again, or finished, clears it. The counters
``aggregator_stalls_raised_total`` and ``aggregator_stalls_cleared_total`` are what an alert
reads to see stalls come and go without a scan. Bounded: past ``size`` stalled workflows the
oldest are forgotten (a forgotten one that is seen stalled again is raised again).
"""

from __future__ import annotations

from .metrics import Metrics
from .view import View

#: Stalled workflows remembered (their ids and reasons).
SIZE = 100_000


class StallWatch:
    """Counts stalls raised and cleared from the views built (one per aggregator)."""

    def __init__(self, metrics: Metrics, *, size: int = SIZE) -> None:
        self._metrics = metrics
        self._size = size
        self._stalled: dict[str, str] = {}
        """Workflow id → why it stalled, for those whose last view was stalled (oldest first)."""

    def saw(self, view: View) -> None:
        """A view was built: count a stall raised or cleared if it is one."""
        stalled = self._stalled
        stall = view.stall
        if stall is not None:
            if view.workflow_id not in stalled:
                if len(stalled) >= self._size:
                    del stalled[next(iter(stalled))]
                stalled[view.workflow_id] = stall.reason
                self._metrics.stalls_raised.labels(stall.reason).inc()
        # A view that knows nothing of any part's time (every part failed, nothing kept) cannot
        # tell that the workflow moved: it clears nothing.
        elif stalled and view.workflow_id in stalled and any(part.updated_at for part in view.parts.values()):
            self._metrics.stalls_cleared.labels(stalled.pop(view.workflow_id)).inc()

    def __len__(self) -> int:
        return len(self._stalled)
