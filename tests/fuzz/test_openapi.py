"""Each server's own ``/openapi.json``, fuzzed against the real server by schemathesis.

The four participants run in-process on the session's Mosquitto (with a few sagas already
finished, so that generated ids sometimes find a record), and the packaged aggregator
definition is served over them twice: without auth, and with a bearer token that every
request carries. Each document is loaded from its server, over HTTP. Every operation gets
positive requests (valid by the document) and, where it takes parameters or a body, negative
ones. Hypothesis runs derandomized: the same code gets the same requests on every run (it
also draws literals of the project's imported modules, so a change there can change them).

Checks: no 5xx (``not_a_server_error``), documented status codes, content types, headers and
body schemas, invalid input refused and valid input accepted, requests without the token
refused (auth on), and no server logs an unhandled error. The aggregator's 503 passes in its
one documented case only: no participant answered within the request's own deadline (a
generated ``?timeout_ms=1``).

The watch stream (``/workflows/{id}/watch``) is left out: it never ends by itself.
"""

from __future__ import annotations

import json
import logging
import random
import urllib.request
import uuid
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, BaseSchema, Case, CheckContext, CheckFunction, GenerationMode, Response

from ..support import order_body
from ._live import SEEDED, TOKEN, LiveServers, post_order
from ._stats import STATS

#: Generated requests per operation and mode (an operation without any input has just one).
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 20}
TARGETS = ("aggregator", "aggregator-auth", "order", "payment", "inventory", "shipping")
WATCH = "/workflows/{workflow_id}/watch"
Operation = APIOperation[Any, Any, Any, Any]


def _config(*, aggregator: bool, headers: dict[str, str]) -> schemathesis.Config:
    enabled = {"enabled": True}
    # The aggregator documents a 503 (no participant answered within the deadline);
    # _deadline_only_unavailable decides which 503s are that one.
    server_error = {"expected-statuses": ["2xx", "3xx", "4xx", *(["503"] if aggregator else [])]}
    return schemathesis.Config.from_dict(
        {
            "checks": {
                "enabled": False,
                "not_a_server_error": {**enabled, **server_error},
                "status_code_conformance": enabled,
                "content_type_conformance": enabled,
                "response_schema_conformance": enabled,
                # Beyond those four: documented headers, invalid input refused, valid input
                # accepted, and (auth on) the same request without the token refused.
                "response_headers_conformance": enabled,
                "negative_data_rejection": enabled,
                "positive_data_acceptance": enabled,
                "missing_required_header": enabled,
                "ignored_auth": enabled,
            },
            "request-timeout": 10,
            "headers": headers,
            # Path ids drawn now and then from workflows that exist: 200 answers with real bodies.
            "dictionaries": {"seeded": {"values": list(SEEDED.values())}},
            "parameters": {"path.workflow_id": {"dictionary": "seeded", "probability": 0.3}},
        }
    )


def _deadline_only_unavailable(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """A 503 from the aggregator only when every participant ran out of the request's deadline."""
    if response.status_code != 503:
        return None
    body = response.json()
    errors = body.get("errors") if isinstance(body, dict) else None
    if not (isinstance(errors, dict) and errors and set(errors.values()) == {"timeout"}):
        raise AssertionError(f"a 503 that is not the documented deadline case: {response.text[:500]}")
    return None


def _load(live: LiveServers, target: str) -> tuple[BaseSchema, str, dict[str, str]]:
    """The target's schema, loaded from its own /openapi.json; its base URL; the headers to send."""
    aggregator = target.startswith("aggregator")
    headers = {"Authorization": f"Bearer {TOKEN}"} if target == "aggregator-auth" else {}
    url = live.participants.get(target) or (live.aggregator_auth if headers else live.aggregator)
    config = _config(aggregator=aggregator, headers=headers)
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=config, headers=headers), url, headers


def _operations(schema: BaseSchema) -> list[Operation]:
    """Every documented operation (``/openapi.json`` too), but the endless watch stream."""
    return [op for path, methods in schema.items() if path != WATCH for op in methods.values()]


def _modes(operation: Operation) -> list[GenerationMode]:
    """Negative requests need something to make invalid: a parameter or a body."""
    has_input = any(True for _ in operation.iter_parameters()) or len(operation.body) > 0
    return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_input else [GenerationMode.POSITIVE]


def _unhandled(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What contract.problem logged as "unhandled error serving ..." (any server, any thread)."""
    return [
        r.getMessage() for r in caplog.records if r.name == "contract.problem" and r.levelno >= logging.ERROR
    ]


class Sent:
    """The requests one target got: unhandled errors they caused, status codes, and each request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.statuses: Counter[int] = Counter()
        self.unhandled: list[str] = []


_CURSORS: dict[str, str] = {}


def _issued_cursor(url: str, headers: dict[str, str]) -> str:
    """A fleet query's cursor that the aggregator at ``url`` issued (asked once, then kept).

    A cursor carries a digest of the position it holds: one generated from the document's pattern
    is a forgery, refused with a 400 though the pattern admits it, so positive requests carry a
    real one instead (negative ones still send generated cursors, and get their 400). The seeded
    declined and unshippable orders are both listed: a page of one has a next page.
    """
    if url not in _CURSORS:
        request = urllib.request.Request(
            f"{url}/workflows?state=FAILED&state=COMPENSATED&limit=1", headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            cursor = json.loads(response.read())["next"]
        assert isinstance(cursor, str), "the seeded workflows give a second page"
        _CURSORS[url] = cursor
    return _CURSORS[url]


def _fuzz(
    operation: Operation,
    mode: GenerationMode,
    *,
    url: str,
    headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    sent: Sent,
) -> None:
    """Send up to EXAMPLES[mode] generated requests; raise the (shrunk) first failure."""
    extra: list[CheckFunction] = []
    if "503" in operation.responses.status_codes:
        extra.append(_deadline_only_unavailable)

    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case[Any]) -> None:
        caplog.clear()
        if mode is GenerationMode.POSITIVE and isinstance(case.query, dict) and "cursor" in case.query:
            case.query["cursor"] = _issued_cursor(url, headers)
        # A query string has no null: a "negative" null is sent as the text "null", which a
        # string parameter (a workflow id) rightly accepts.
        assume(
            mode is GenerationMode.POSITIVE
            or not isinstance(case.query, dict)
            or all(value is not None for value in case.query.values())
        )
        try:
            response = case.call_and_validate(base_url=url, headers=headers, additional_checks=extra)
        finally:
            logged = _unhandled(caplog)  # also when a check failed
            sent.unhandled.extend(f"{m} (for {case.as_curl_command(headers=headers)})" for m in logged)
        request = response.request
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        sent.requests.append(f"{request.method} {request.path_url} {body!r}")
        sent.statuses[response.status_code] += 1
        assert not logged, f"the server logged {logged}"

    # schemathesis's negative strategies also draw from the random module: seeded per operation
    # and mode, the requests sent do not depend on what ran before in the same session.
    state = random.getstate()
    random.seed(f"{operation.label} {mode.value}")
    try:
        run()
    finally:
        random.setstate(state)


# schemathesis's negative strategies use the random module (seeded in _fuzz, so still derandomized).
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.slow
def test_server_keeps_to_its_openapi_document(
    target: str, live: LiveServers, caplog: pytest.LogCaptureFixture
) -> None:
    """Generated requests for every documented operation get documented, well-formed answers."""
    schema, url, headers = _load(live, target)
    operations = _operations(schema)
    assert len(operations) >= 5
    failures: list[str] = []
    sent = Sent()
    for operation in operations:
        for mode in _modes(operation):
            try:
                _fuzz(operation, mode, url=url, headers=headers, caplog=caplog, sent=sent)
            except Unsatisfiable:
                # Only the security header could be made invalid, and it is always sent right.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    STATS.http(target, operations=len(operations), requests=sent.requests, statuses=sent.statuses)
    assert not failures, "\n\n".join(failures)
    assert sent.unhandled == []
    assert sent.statuses[200] > 0 and sum(n for s, n in sent.statuses.items() if 400 <= s < 500) > 0


def test_the_order_document_admits_an_integral_float_quantity(live: LiveServers) -> None:
    """``qty`` is a JSON Schema ``integer``: 1.0 is one (a number with a zero fractional part)."""
    with urllib.request.urlopen(f"{live.participants['order']}/openapi.json", timeout=10) as response:
        document = json.load(response)
    qty = document["components"]["schemas"]["Item"]["properties"]["qty"]
    assert qty["type"] == "integer"
    assert qty["minimum"] <= 1.0 <= qty["maximum"]
    assert document["components"]["schemas"]["OrderRequest"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/Item"
    }


def test_an_integral_float_quantity_is_accepted_as_documented(live: LiveServers) -> None:
    """What schemathesis found, reduced by hand: a valid order whose quantity is written 1.0."""
    body = order_body("happy", f"fz-qty-{uuid.uuid4().hex[:8]}")
    body["items"] = [{"sku": "BOOK-1", "qty": 1.0}]
    headers = {"Content-Type": "application/json"}
    status, _, answer = post_order(live.participants["order"], json.dumps(body).encode(), headers)
    assert status == 202, answer
