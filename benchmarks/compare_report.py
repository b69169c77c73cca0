"""What ``python -m benchmarks compare`` writes: JSON, a Markdown table, PNG plots and the decision report.

The decision report sets each of the design's decision criteria (chapter 11 of *Software
Architecture: The Hard Parts*) beside the figures that measure it, and says for each of the
design's claims whether this run's figures agree, each verdict by a rule stated beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .report import _row, _strip_samples

PLOTS = ("compare_latency.png", "compare_staleness.png", "compare_completion.png")
#: The read:write ratio the headline table shows.
HEADLINE_RATIO = "10"


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """Write ``compare.json``, ``compare.md``, ``decision.md`` and the plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "compare.json", out / "compare.md", out / "decision.md"]
    files[0].write_text(json.dumps(_strip_samples(results), indent=2) + "\n")
    files[1].write_text(markdown(results))
    files[2].write_text(decision(results))
    return files + plots(results, out)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def headline(results: dict[str, Any]) -> list[str]:
    """One row per strategy: the figures a reader compares first."""
    ratio = HEADLINE_RATIO
    lines = [
        _row(
            [
                "strategy",
                f"read p50 / p99 at {ratio}:1 (ms)",
                "reads/s served at 100:1 (offered)",
                f"participant calls / read at {ratio}:1",
                f"fresh reads at {ratio}:1",
                "age p99 (ms)",
                "calibration",
                "saga completion p50 / p99 (ms)",
                "sagas/s",
                "messages / saga",
                "payment down: reads 200 / complete",
                "coordinator down: steps done meanwhile / new orders refused",
                "last saga done after restart (s)",
            ]
        ),
        _row(["---"] * 13),
    ]
    for name, f in results["strategies"].items():
        r = f["reads"][ratio]
        top = f["reads"][str(max(results["ratios"]))]
        down = f["coordinator_down"]
        lines.append(
            _row(
                [
                    name,
                    f"{_ms(r['read_latency_ms']['p50'])} / {_ms(r['read_latency_ms']['p99'])}",
                    f"{top['reads_per_s']} ({round(top['offered'] / results['phase_s'], 1)})",
                    r["calls_per_read"],
                    _pct(r["fresh_share"]),
                    _ms(r["age_ms"]["p99"]),
                    _pct(r["calibration"]),
                    f"{_ms(f['completion_ms']['p50'])} / {_ms(f['completion_ms']['p99'])}",
                    f["sagas_per_s"],
                    f["messages_per_saga"],
                    f"{_pct(f['participant_down']['answered_200'])} / {_pct(f['participant_down']['complete'])}",
                    f"{_pct(down['progress_while_down'])} / {_pct(down['orders_refused_while_down'])}",
                    down["finished_after_restart_s"],
                ]
            )
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The comparison: the headline table, then reads at every ratio and the cost of a change."""
    meta = results["meta"]
    lines = [
        "# Coordination strategies compared",
        "",
        f"Run: {meta['started']}, {'quick' if meta['quick'] else 'full'} mode, {meta['cpus']} CPUs; "
        f"writes at {results['write_rate']} sagas/s, {results['phase_s']} s per read:write ratio. "
        "Every strategy ran the same saga, the same participants' domain code and the same broker, "
        "each in a cluster of its own.",
        "",
        *headline(results),
        "",
        "Sagas that reached their end (the read workload; the throughput burst; across the coordinator's crash): "
        + "; ".join(
            f"{name} {f.get('sagas_finished', '?')}/{f['sagas']}, {f.get('throughput_sagas_finished', '?')}/"
            f"{f['throughput_sagas']}, {f['coordinator_down'].get('sagas_finished', '?')}/{f['coordinator_down']['sagas']}"
            for name, f in results["strategies"].items()
        )
        + ".",
        "",
        "## Reads at each read:write ratio",
        "",
        _row(
            [
                "strategy",
                "ratio",
                "p50 / p99 (ms)",
                "served / offered",
                "calls / read",
                "fresh",
                "age p99 (ms)",
            ]
        ),
        _row(["---"] * 7),
    ]
    for name, f in results["strategies"].items():
        for ratio in results["ratios"]:
            r = f["reads"][str(ratio)]
            lines.append(
                _row(
                    [
                        name,
                        f"{ratio}:1",
                        f"{_ms(r['read_latency_ms']['p50'])} / {_ms(r['read_latency_ms']['p99'])}",
                        f"{r['reads']} / {r['offered']}",
                        r["calls_per_read"],
                        _pct(r["fresh_share"]),
                        _ms(r["age_ms"]["p99"]),
                    ]
                )
            )
    lines += [
        "",
        "## Adding a step (a fraud check after the payment's authorisation): services to redeploy",
        "",
        _row(["strategy", "services", "which", "configuration"]),
        _row(["---"] * 4),
    ]
    for name, r in results["redeploys"].items():
        lines.append(_row([name, r["count"], ", ".join(r["services"]), r["config"]]))
    lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in PLOTS), ""]
    return "\n".join(lines)


# -- the decision report -------------------------------------------------------------------------

_CHOREO = ("choreography, on-demand", "choreography, ttl 100 ms", "choreography, events")


def _verdicts(results: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    """(criterion, the design's claim, the figure, the rule, agrees?) for each claim."""
    s = results["strategies"]
    top = str(max(results["ratios"]))
    ratio = HEADLINE_RATIO

    def get(name: str, pick: Callable[[dict[str, Any]], Any]) -> Any:
        return pick(s[name]) if name in s else None

    def p99(name: str, at: str = top) -> Any:
        return get(name, lambda f: f["reads"][at]["read_latency_ms"]["p99"])

    def calls(name: str) -> Any:
        return get(name, lambda f: f["reads"][ratio]["calls_per_read"])

    def fresh(name: str) -> Any:
        return get(name, lambda f: f["reads"][ratio]["fresh_share"])

    def progress(name: str) -> Any:
        return get(name, lambda f: f["coordinator_down"]["progress_while_down"])

    def per_s(name: str) -> Any:
        return get(name, lambda f: f["sagas_per_s"])

    def complete_down(name: str) -> Any:
        return get(name, lambda f: f["participant_down"]["complete"])

    def safe(check: Callable[[], bool]) -> bool | None:
        try:
            return bool(check())
        except TypeError:  # a figure is missing (None)
            return None

    on_demand, orch, front = "choreography, on-demand", "orchestration", "front controller"
    redeploy = results["redeploys"]
    return [
        (
            "Frequent state queries",
            "a coordinator's store answers state queries; stateless choreography pays network calls on every query",
            f"calls per read at {ratio}:1: on-demand {calls(on_demand)}, events {calls('choreography, events')}, "
            f"front controller {calls(front)}, orchestration {calls(orch)}; read p99 at {top}:1 (ms): "
            + ", ".join(f"{n} {_ms(p99(n))}" for n in s),
            "on-demand makes more calls per read than the orchestrator and the front controller",
            safe(lambda: calls(on_demand) > max(calls(orch), calls(front))),
        ),
        (
            "Strict consistency",
            "choreography pays with consistency: its views may be stale; an orchestrator's state is authoritative",
            f"fresh reads at {ratio}:1: " + ", ".join(f"{n} {_pct(fresh(n))}" for n in s),
            "the orchestrator's share of fresh reads is above on-demand choreography's",
            safe(lambda: fresh(orch) > fresh(on_demand)),
        ),
        (
            "Fault tolerance",
            "orchestration is a single point of failure; choreography isolates faults",
            "saga steps committed while the coordinator was down: "
            + ", ".join(f"{n} {_pct(progress(n))}" for n in s)
            + "; complete views with payment down: "
            + ", ".join(f"{n} {_pct(complete_down(n))}" for n in s),
            "sagas progressed less with the orchestrator down than with the aggregator down",
            safe(lambda: progress(orch) < progress(on_demand)),
        ),
        (
            "Scalability",
            "the orchestrator is a bottleneck; choreography scales",
            "sagas/s: " + ", ".join(f"{n} {per_s(n)}" for n in s),
            "choreography finished more sagas per second than orchestration",
            safe(lambda: per_s(on_demand) > per_s(orch)),
        ),
        (
            "Error handling",
            "orchestration decides compensations in one place; in choreography every participant carries its part",
            "every outcome, compensations included, ended as expected under each strategy (the tests); "
            "compensating transitions are decided by 1 service (orchestrator) vs "
            f"{_compensators()} participants (choreography)",
            "fewer services decide compensations under orchestration",
            _compensators() > 1,
        ),
        (
            "Service autonomy",
            "choreography keeps services autonomous; orchestration couples them to the orchestrator",
            "services to redeploy to add a step: "
            + ", ".join(f"{n} {r['count']} ({', '.join(r['services'])})" for n, r in redeploy.items()),
            "adding a step redeploys no more services under choreography than under orchestration",
            redeploy["choreography"]["count"] <= redeploy["orchestration"]["count"],
        ),
    ]


def _compensators() -> int:
    """Participants that react to a failure or a compensation (a handler for such an event),
    counted from the choreography's code: each carries part of the error handling."""
    from order_saga import SPECS

    failures = {"payment.declined", "payment.refunded", "inventory.rejected", "shipping.failed"}
    return sum(1 for spec in SPECS.values() if failures & set(spec.handlers))


def decision(results: dict[str, Any]) -> str:
    """The design's criteria beside the measured figures, and where they agree or disagree."""
    meta = results["meta"]
    lines = [
        "# Which coordination strategy? The design's criteria, measured",
        "",
        f"From `python -m benchmarks compare` ({'quick' if meta['quick'] else 'full'} run of {meta['started']}, "
        f"{meta['cpus']} CPUs; figures in [compare.md](compare.md)). Each verdict follows the rule beside it, "
        "applied to this run's figures; on another machine, run the command and read your own.",
        "",
        _row(["criterion", "the design says", "measured", "rule", "verdict"]),
        _row(["---"] * 5),
    ]
    for criterion, claim, figure, rule, agrees in _verdicts(results):
        verdict = "no figure" if agrees is None else ("agrees" if agrees else "**disagrees**")
        lines.append(_row([criterion, claim, figure, rule, verdict]))
    lines += ["", "## Headline", "", *headline(results), ""]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Read latency CDFs per strategy (one panel per ratio), fresh reads by ratio, completion CDFs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    strategies = results["strategies"]
    ratios = results["ratios"]
    fig, axes = plt.subplots(1, len(ratios), figsize=(5 * len(ratios), 4.5))
    for ax, ratio in zip(axes, ratios, strict=True):
        for name, f in strategies.items():
            values = sorted(f["reads"][str(ratio)].get("samples", []))
            if values:
                ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("read latency (ms, log)")
        ax.set_ylabel("P(latency ≤ x)")
        ax.set_title(f"reads at {ratio}:1")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out / PLOTS[0])
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, f in strategies.items():
        left.plot(ratios, [f["reads"][str(r)]["fresh_share"] for r in ratios], marker="o", label=name)
        right.plot(ratios, [f["reads"][str(r)]["age_ms"]["p99"] for r in ratios], marker="o", label=name)
    for ax, label in ((left, "fresh reads (share)"), (right, "age p99 (ms)")):
        ax.set_xscale("log")
        ax.set_xlabel("reads per write")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    left.set_title("staleness vs read:write ratio")
    fig.tight_layout()
    written.append(out / PLOTS[1])
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, f in strategies.items():
        values = sorted(f["completion_ms"].get("samples", []))
        if values:
            ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("saga completion: POST to its last commit (ms, log)")
    ax.set_ylabel("P(completion ≤ x)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out / PLOTS[2])
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    return written
