"""``python -m aggregator get ID``: a workflow's view, readable by a person."""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import quote

import aiohttp


def render(view: dict[str, Any]) -> str:
    """A view as a few aligned lines of text."""
    lines = [
        f"{view['workflow_id']}  ({view['workflow']})",
        f"  state     {view['state']}" + (f"   step: {view['step']}" if view.get("step") else ""),
        f"  complete  {'yes' if view['complete'] else 'NO: some required parts are missing'}",
        f"  staleness at most {view['staleness_ms']} ms   (generated {view['generated_at']})",
        "  parts:",
    ]
    for name, part in view["parts"].items():
        state = part["state"] or "-"
        version = f"v{part['version']}" if part["version"] is not None else ""
        latency = f"{part['latency_ms']:.1f} ms" if part["latency_ms"] is not None else ""
        error = f"error: {part['error']}" if part["error"] else ""
        lines.append(
            f"    {name:<12} {state:<12} {version:<5} {part['source']:<6} {latency:<10} {error}".rstrip()
        )
    for anomaly in view["anomalies"]:
        lines.append(f"  anomaly: {anomaly.get('detail', anomaly)}")
    return "\n".join(lines)


async def get_command(url: str, workflow_id: str, *, as_json: bool, token: str | None) -> int:
    """Fetch and print one view; exit 0 when shown, 1 when the aggregator answered an error, 2 when unreachable."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = f"{url.rstrip('/')}/workflows/{quote(workflow_id, safe='')}"
    try:
        async with aiohttp.ClientSession() as session, session.get(target, headers=headers) as resp:
            body = await resp.json(content_type=None)
            status = resp.status
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        print(f"cannot get {target}: {exc}", file=sys.stderr)
        return 2
    if status != 200:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        print(f"{workflow_id}: HTTP {status}: {detail}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2) if as_json else render(body))
    return 0
