"""What the fuzz tests sent, summed up at the end of the run (see conftest.py)."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class FuzzStats:
    """Per target: operations, requests, their status codes and a digest (same digest, same requests)."""

    operations: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    bodies: int = 0
    payloads: int = 0

    def http(self, target: str, *, operations: int, requests: list[str], statuses: Counter[int]) -> None:
        self.operations[target] = operations
        self.requests[target] = len(requests)
        self.statuses[target] = statuses
        self.digests[target] = hashlib.sha256("\n".join(requests).encode()).hexdigest()[:12]

    def lines(self) -> list[str]:
        out = []
        for target, count in self.requests.items():
            codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses[target].items()))
            out.append(
                f"{target}: {count} requests over {self.operations[target]} operations "
                f"({codes}; digest {self.digests[target]})"
            )
        if self.requests:
            out.append(f"HTTP: {sum(self.requests.values())} generated requests in all")
        if self.bodies:
            out.append(f"HTTP: {self.bodies} hostile POST /orders bodies")
        if self.payloads:
            out.append(f"MQTT: {self.payloads} hostile payloads published")
        return out


STATS = FuzzStats()
