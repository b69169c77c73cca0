"""Hostile request bodies for ``POST /orders``, the one route that reads a body, as raw HTTP.

schemathesis only sends bodies its document describes; these are the ones it does not: random
bytes, JSON of any shape, bodies past the size limit, and bodies sent with a
``Content-Encoding`` (which aiohttp decodes before the handler reads them), compressed right or
not. Every answer must be one the document lists, as problem+json when it is an error, and the
server must never log an unhandled error.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from participants.http import MAX_BODY

from ..support import order_body
from ._live import LiveServers, post_order
from ._payloads import json_values
from ._stats import STATS

DOCUMENTED = {202, 400, 409, 413, 422}
PROBLEM_JSON = "application/problem+json"
#: Content-Encoding values, and how the body is encoded for them (None: no header).
ENCODINGS: dict[str | None, Callable[[bytes], bytes]] = {
    None: bytes,
    "identity": bytes,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
}


def _unhandled(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "contract.problem" and r.levelno >= logging.ERROR
    ]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Random bytes, any JSON, a valid order, one with a field set to any JSON, or one near the size limit."""
    kind = draw(st.sampled_from(["bytes", "json", "order", "mutated", "large"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    order: dict[str, Any] = order_body("happy", draw(st.sampled_from(["fz-body-1", "fz-body-2", None])))
    if kind == "mutated":
        order[draw(st.sampled_from([*order, "extra"]))] = draw(json_values)
    if kind == "large":
        order["pad"] = "x" * draw(st.integers(MAX_BODY - 200, MAX_BODY + 2000))
    return json.dumps({k: v for k, v in order.items() if v is not None}).encode()


@pytest.mark.slow
def test_hostile_order_bodies_get_documented_answers(
    live: LiveServers, caplog: pytest.LogCaptureFixture
) -> None:
    """Well-encoded hostile bodies: documented status, problem+json errors, nothing unhandled."""
    url = live.participants["order"]
    seen: dict[int, int] = {}

    @settings(
        max_examples=80,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies(), encoding=st.sampled_from(list(ENCODINGS)))
    def run(body: bytes, encoding: str | None) -> None:
        caplog.clear()
        headers = {"Content-Type": "application/json"}
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        status, content_type, answer = post_order(url, ENCODINGS[encoding](body), headers)
        seen[status] = seen.get(status, 0) + 1
        assert status in DOCUMENTED, (status, answer[:300])
        if status == 202:
            assert content_type == "application/json" and "workflow_id" in json.loads(answer)
        else:
            assert content_type == PROBLEM_JSON, (status, content_type, answer[:300])
            assert json.loads(answer)["status"] == status
        assert _unhandled(caplog) == []

    run()
    STATS.bodies = sum(seen.values())
    assert {202, 400, 413, 422} <= set(seen), seen


ORDER = json.dumps(order_body("happy")).encode()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        pytest.param("gzip", b"abcd", id="gzip-not-gzip"),
        pytest.param("gzip", gzip.compress(ORDER) + b"garbage", id="gzip-trailing-garbage"),
        pytest.param("deflate", b"abcd" + zlib.compress(ORDER), id="deflate-corrupt"),
    ],
)
def test_an_undecodable_body_is_a_400(
    live: LiveServers, caplog: pytest.LogCaptureFixture, encoding: str, body: bytes
) -> None:
    """A body that does not decode is the client's error, like a body that is not JSON."""
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    status, content_type, answer = post_order(live.participants["order"], body, headers)
    assert (status, content_type) == (400, PROBLEM_JSON), answer[:300]
    assert _unhandled(caplog) == []
