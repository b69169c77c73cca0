"""``python -m benchmarks latency|tail|staleness|faults|mapping|asgi|notify|fleet|redrive|all|compare [--quick] [--out DIR]``.

``all`` runs the aggregator's own benchmarks into ``results.json``/``results.md``; ``compare``
runs the coordination strategies side by side into ``compare.json``, ``compare.md`` and
``decision.md`` (see :mod:`benchmarks.compare`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.cli import Parser
from order_saga.broker import mosquitto_binary

from . import (
    asgi,
    compare,
    compare_report,
    faults,
    fleet,
    latency,
    mapping,
    notify,
    redrive,
    report,
    staleness,
    tail,
)

RUNNERS = {
    "latency": latency.run,
    "tail": tail.run,
    "staleness": staleness.run,
    "faults": faults.run,
    "mapping": mapping.run,
    "asgi": asgi.run,
    "notify": notify.run,
    "fleet": fleet.run,
    "redrive": redrive.run,
}


class Progress:
    """A one-line progress bar on stderr: steps done of the expected count, elapsed time."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def __call__(self, step: str) -> None:
        self.done += 1
        width = 30
        filled = min(width, width * self.done // max(1, self.total))
        elapsed = time.monotonic() - self.started
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {elapsed:5.1f}s {step[:60]:<60}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write(f"\rdone in {time.monotonic() - self.started:.1f}s{' ' * 100}\n")


#: Where full runs write the results committed with the project.
COMMITTED = Path(__file__).resolve().parent / "results"

#: Progress steps each benchmark reports (for the bar's length).
STEPS = {
    "latency": 19,
    "tail": 2,
    "staleness": 6,
    "faults": 6,
    "mapping": mapping.STEPS,
    "asgi": asgi.STEPS,
    "notify": notify.STEPS,
    "fleet": fleet.STEPS,
    "redrive": redrive.STEPS,
    "compare": 6 * len(compare.STRATEGIES),
}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "which",
        nargs="+",
        choices=[*RUNNERS, "all", "compare"],
        help="one or more benchmarks, or all, or compare",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs (about a minute each): checks shape, not speed"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default: benchmarks/results for full runs, "
        "a new temporary directory for --quick runs, which never overwrite the committed results)",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="bench-quick-")) if args.quick else COMMITTED
    elif args.quick and args.out.resolve() == COMMITTED.resolve():
        parser.error(
            f"a --quick run never overwrites the committed results in {args.out}; pick another --out"
        )
    if mosquitto_binary() is None:
        parser.error("the benchmarks need the mosquitto binary (apt-get install -y mosquitto)")
    if len(args.which) > 1 and {"all", "compare"} & set(args.which):
        parser.error("all and compare run alone")
    if args.which == ["compare"]:
        return _compare(args.quick, args.out)
    chosen = list(RUNNERS) if args.which == ["all"] else list(dict.fromkeys(args.which))
    steps = {**STEPS, "latency": STEPS["latency"] + (0 if args.quick else 5)}  # full: N=16 at two loads
    progress = Progress(sum(steps[c] for c in chosen))
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "cpus": os.cpu_count(),
        }
    }
    try:
        for name in chosen:
            results[name] = RUNNERS[name](quick=args.quick, progress=progress)
            results["meta"].setdefault("ran", {})[name] = datetime.now(UTC).isoformat(timespec="seconds")
    finally:
        progress.close()
    results = _merged(args.out / "results.json", results)
    for path in report.write(results, args.out):
        print(path)
    return 0


def _compare(quick: bool, out: Path) -> int:
    progress = Progress(STEPS["compare"])
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "cpus": os.cpu_count(),
    }
    try:
        results = {"meta": meta, **compare.run(quick=quick, progress=progress)}
    finally:
        progress.close()
    for path in compare_report.write(results, out):
        print(path)
    return 0


def _merged(previous: Path, results: dict[str, Any]) -> dict[str, Any]:
    """``results`` over the sections of the same kind of run (full or quick) already in ``previous``.

    Running one benchmark (``faults``) into a directory that holds a full run's results replaces
    that section and keeps the others, each section saying when it ran (``meta.ran``).
    """
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        return results
    if not isinstance(old, dict) or old.get("meta", {}).get("quick") != results["meta"]["quick"]:
        return results
    ran = {
        **old["meta"].get("ran", dict.fromkeys((k for k in old if k != "meta"), old["meta"].get("started"))),
        **results["meta"]["ran"],
    }
    return {**old, **results, "meta": {**results["meta"], "ran": ran}}


if __name__ == "__main__":
    sys.exit(main())
