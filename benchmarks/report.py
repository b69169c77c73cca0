"""Benchmark results as JSON, a Markdown table and PNG plots (latency CDFs, t-visibility)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOTS = ("latency_cdf.png", "tail_cdf.png", "t_visibility.png")


def _strip_samples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_samples(v) for k, v in value.items() if k != "samples"}
    return value


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and the plots into ``out``; return the files."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "results.json", out / "results.md"]
    files[0].write_text(json.dumps(_strip_samples(results), indent=2) + "\n")
    files[1].write_text(markdown(results))
    files += plots(results, out)
    return files


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _verdict(met: bool) -> str:
    """How a target reads in the table: a miss is said plainly."""
    return "met" if met else "**MISSED**"


def _judged(target: str, ratio: Any, *, at_least: bool, bound: float) -> str:
    """``target`` with whether ``ratio`` meets it (a missing or NaN ratio misses)."""
    ok = (
        isinstance(ratio, int | float) and ratio == ratio and (ratio >= bound if at_least else ratio <= bound)
    )
    return f"{target}: {_verdict(ok)}"


def _target_rows(targets: dict[str, dict[str, Any]]) -> list[str]:
    """One table row per target of ``results["latency"]["targets"]``."""
    return [
        _row(
            [
                t["figure"],
                f"{t['value']} {t['unit']}",
                f"{t['reference']} {t['unit']}" + (f" ({t['note']})" if t.get("note") else ""),
                t["ratio"],
                f"{t['target']}: {_verdict(t['met'])}",
            ]
        )
        for t in targets.values()
    ]


def _when(meta: dict[str, Any]) -> str:
    """When the results were measured: one time, or each section's when they come from several runs."""
    ran: dict[str, str] = meta.get("ran") or {}
    if len(set(ran.values())) <= 1:
        return str(meta.get("started", "?"))
    by_time: dict[str, list[str]] = {}
    for name, at in ran.items():
        by_time.setdefault(at, []).append(name)
    return "; ".join(f"{', '.join(names)} {at}" for at, names in sorted(by_time.items()))


def markdown(results: dict[str, Any]) -> str:
    """The results table: every figure beside its same-run reference, as a ratio."""
    meta = results.get("meta", {})
    lines = [
        "# Benchmark results",
        "",
        f"Run: {_when(meta)}, {'quick' if meta.get('quick') else 'full'} mode, "
        f"{meta.get('cpus', '?')} CPUs. Absolute times on a shared machine are noise: read the ratios.",
        "",
        _row(["figure", "measured", "reference (same run)", "ratio", "target"]),
        _row(["---"] * 5),
    ]
    lat = results.get("latency")
    if lat:
        for key in ("cold_n4", "cold_n16", "cold_n16_at_90"):
            if key not in lat:
                continue
            c = lat[key]
            s = c["stats"]
            bare = (  # results from before the bare batching reference have none
                (
                    f"; bare batching {s['bare_batching']['p50']} ms",
                    f"; {c['ratios']['p50_vs_bare_batching']} x bare",
                )
                if "bare_batching" in s
                else ("", "")
            )
            lines.append(
                _row(
                    [
                        f"cold view p50 / p99 / p99.9, N={c['n']} at 20±5 ms, {c['rate']:.0f} views/s",
                        f"{s['aggregator']['p50']} / {s['aggregator']['p99']} / {s['aggregator']['p99.9']} ms",
                        f"slowest direct {s['direct_slowest']['p50']} / {s['direct_slowest']['p99']} ms; "
                        f"naive gather {s['naive_gather']['p50']} ms; sequential {s['sequential']['p50']} ms"
                        + bare[0],
                        f"{c['ratios']['p50_vs_slowest_direct']} x slowest; {c['ratios']['p50_vs_naive_gather']} x naive; "
                        f"{c['ratios']['p50_vs_sequential']} x sequential" + bare[1],
                        _judged(
                            "p50 ≤ 1.05 x slowest",
                            c["ratios"]["p50_vs_slowest_direct"],
                            at_least=False,
                            bound=1.05,
                        ),
                    ]
                )
            )
        z = lat["zero_delay"]
        a = z["added_latency"]
        lines.append(
            _row(
                [
                    "added latency at zero delay (p50; open loop, one id)",
                    f"{a['added_ms']['aggregator']} ms",
                    f"naive gather adds {a['added_ms']['naive_gather']} ms (direct call {a['stats']['direct_participant']['p50']} ms)",
                    a["ratio_vs_naive_gather"],
                    _judged("≤ 0.8", a["ratio_vs_naive_gather"], at_least=False, bound=0.8),
                ]
            )
        )
        h = z["cache_hit"]
        lines.append(
            _row(
                [
                    "cache-hit read (events mode) p50 (open loop, one id)",
                    f"{h['stats']['aggregator_events_hit']['p50']} ms",
                    f"central store (SQLite row) {h['stats']['central_store']['p50']} ms",
                    h["ratio_p50_vs_central_store"],
                    _judged("≤ 1.2", h["ratio_p50_vs_central_store"], at_least=False, bound=1.2),
                ]
            )
        )
        t = z["throughput"]
        lines.append(
            _row(
                [
                    "throughput, cache-hit path (32 clients, one id)",
                    f"{t['rps']['aggregator_cache_hit']} req/s",
                    f"plain handler {t['rps']['plain_handler']} req/s",
                    t["cache_hit_vs_plain"],
                    _judged("≥ 0.5", t["cache_hit_vs_plain"], at_least=True, bound=0.5),
                ]
            )
        )
        lines.append(
            _row(
                [
                    "throughput, cold path (32 clients, one id)",
                    f"{t['rps']['aggregator_cold']} req/s",
                    f"naive gather {t['rps']['naive_gather']} req/s",
                    t["cold_vs_naive_gather"],
                    _judged("≥ 1.3", t["cold_vs_naive_gather"], at_least=True, bound=1.3),
                ]
            )
        )
        for mode, co in z["coalescing"].items():
            calls = co["upstream_calls_per_participant"]
            lines.append(
                _row(
                    [
                        f"coalescing: 1000 concurrent GETs of one id ({mode})",
                        f"{max(calls.values())} call(s) per participant",
                        "1000 GETs",
                        f"{max(calls.values())}/1000",
                        f"1 per participant: {_verdict(max(calls.values()) == 1)}",
                    ]
                )
            )
        lines += _target_rows(lat.get("targets", {}))
        b = z["batch"]
        lines.append(
            _row(
                [
                    "batch: 100 workflows x 4 participants (p50)",
                    f"{b['stats']['batch_100']['p50']} ms, {b['upstream_calls_per_batch_per_participant']} call per participant",
                    f"one view {b['stats']['one_view']['p50']} ms",
                    b["ratio_p50_vs_one_view"],
                    "",
                ]
            )
        )
    tail = results.get("tail")
    if tail:
        for run, where in ((tail, "5 ms participants"), (tail.get("zero_delay"), "zero-delay participants")):
            if not run:
                continue
            wins = run["hedged"].get("hedge_wins")
            won = "" if wins is None else f", {wins:.0f} of {run['hedged']['hedges']:.0f} hedges won"
            lines.append(
                _row(
                    [
                        f"tail ({where}): payment slow {int(tail['slow_rate'] * 100)}% "
                        f"(+{tail['slow_ms']:.0f} ms), hedged p99",
                        f"{run['hedged']['stats']['p99']} ms, {run['hedged']['extra_requests_pct']}% extra "
                        f"requests{won}",
                        f"unhedged p99 {run['unhedged']['stats']['p99']} ms",
                        run["p99_hedged_vs_unhedged"],
                        "≤ 0.3, ≤ 5% extra: "
                        + _verdict(
                            run["p99_hedged_vs_unhedged"] <= 0.3 and run["hedged"]["extra_requests_pct"] <= 5
                        ),
                    ]
                )
            )
    mapping = results.get("mapping")
    if mapping:
        lines += _target_rows(mapping["targets"])
    served = results.get("asgi")
    if served:
        lines += _target_rows(served["targets"])
    announced = results.get("notify")
    if announced:
        lines += _target_rows(announced["targets"])
    fleet = results.get("fleet")
    if fleet:
        lines += _target_rows(fleet["targets"])
    redriven = results.get("redrive")
    if redriven:
        lines += _target_rows(redriven["targets"])
    st = results.get("staleness")
    if st:
        lines += [
            "",
            f"## Staleness at {st['read_rate']:.0f} reads/s : {st['write_rate']:.0f} writes/s (reference: the truth log of writes)",
            "",
            _row(
                [
                    "mode",
                    "age p50 / p99 (ms)",
                    "fresh reads",
                    "k p99",
                    "served without a participant call",
                    "upstream calls / read",
                    "calibration",
                ]
            ),
            _row(["---"] * 7),
        ]
        for mode, f in st["modes"].items():
            lines.append(
                _row(
                    [
                        mode,
                        f"{f['age_ms']['p50']:.2f} / {f['age_ms']['p99']:.2f}",
                        f"{f['fresh_share'] * 100:.1f}%",
                        f["k_staleness"]["p99"],
                        f"{f['served_without_participant_call'] * 100:.1f}%",
                        f["upstream_calls_per_read"],
                        f"{f['calibration'] * 100:.1f}%",
                    ]
                )
            )
    skewed = [(mode, f) for mode, f in (st or {}).get("modes", {}).items() if "skew_s" in f]
    if skewed:
        lines += [
            "",
            "Skewed rows: the payment service's clock set off by libfaketime, its truth-log times set "
            "right by the same amount; the aggregator measures the offset itself: "
            + "; ".join(
                f"{mode}: measured {f['clock_offset_ms']} ms, calibration {f['calibration'] * 100:.1f}% "
                f"(target 100%: {_verdict(f['calibration_met'])})"
                for mode, f in skewed
            )
            + ".",
        ]
    elif st and st.get("skewed"):
        lines += ["", f"Skewed rows {st['skewed']}."]
    quiet = (st or {}).get("quiet")
    if quiet:
        lines += [
            "",
            f"Events mode, a workflow quiet for {quiet['quiet_s']:.0f} s, read 10 times: `staleness_ms` "
            f"max {quiet['staleness_ms']['max']} ms, p50 {quiet['staleness_ms']['p50']:.0f} ms, "
            f"{quiet['ratio_to_watermark']}x the {quiet['watermark_ms']} ms watermark interval "
            f"(target {quiet['target']}: {_verdict(quiet['met'])}).",
        ]
    faults = results.get("faults") or {}
    if faults:
        lines += [
            "",
            "## Faults: the broker loses what it holds during the sagas",
            "",
            _row(
                [
                    "broker",
                    "fault",
                    "`--redrive`",
                    "sagas finished",
                    "last one, after the fault",
                    "workflows redriven",
                    "duplicates dropped",
                    "reconnects",
                    "applied exactly what the sagas need",
                ]
            ),
            _row(["---"] * 9),
        ]
        for fa in faults.values():
            lines.append(
                _row(
                    [
                        fa["broker"],
                        fa["fault"],
                        fa["redrive"],
                        f"{fa['finished']} / {fa['sagas']}",
                        f"{fa['seconds_to_finish_after_fault']} s",
                        int(fa["workflows_redriven"]),
                        fa["duplicates_dropped"],
                        fa["reconnects"],
                        ("yes" if fa["exact"] else f"**NO**: {fa['applied']} vs {fa['needed']}"),
                    ]
                )
            )
        lines.append(f"\nstall_after_ms {next(iter(faults.values()))['stall_after_ms']}.")
    lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in PLOTS), ""]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Latency CDFs (cold views, tail) and t-visibility curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    written = []

    def cdf(ax: Any, samples: dict[str, list[float]], title: str) -> None:
        for label, values in samples.items():
            if values:
                ordered = sorted(values)
                ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on narrow ranges
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("P(latency ≤ x)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)

    # A section merged in from an earlier run has no samples left (results.json keeps none):
    # its plot stays as that run drew it.
    lat = results.get("latency")
    if lat and "samples" in lat["zero_delay"]:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        cdf(axes[0], lat["zero_delay"]["samples"], "zero delay, 4 participants")
        cdf(axes[1], lat["cold_n4"]["samples"], "cold view, N=4 at 20±5 ms")
        cdf(axes[2], lat["cold_n16"]["samples"], "cold view, N=16 at 20±5 ms")
        fig.tight_layout()
        written.append(out / PLOTS[0])
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    tail = results.get("tail")
    if tail and "samples" in tail:
        zero = tail.get("zero_delay") or {}
        if "samples" in zero:
            fig, (ax, bare) = plt.subplots(1, 2, figsize=(11, 4.5))
            cdf(bare, zero["samples"], "zero-delay participants, one slow 2% of the time")
        else:
            fig, ax = plt.subplots(figsize=(6, 4.5))
        cdf(ax, tail["samples"], "one participant slow 2% of the time")
        fig.tight_layout()
        written.append(out / PLOTS[1])
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    st = results.get("staleness")
    if st:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for mode, f in st["modes"].items():
            points = [(float(t) + 0.5, p) for t, p in f["t_visibility"].items() if p is not None]
            ax.plot([t for t, _ in points], [p for _, p in points], marker="o", label=mode)
        ax.set_xscale("log")
        ax.set_xlabel("t: ms between a write's commit and the read (log)")
        ax.set_ylabel("P(read reflects the write)")
        ax.set_ylim(0, 1.05)
        ax.set_title("t-visibility (PBS)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / PLOTS[2])
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    return written
