"""Workflow definitions: the packaged one, rule evaluation, anomalies, and clear errors for bad files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aggregator import DefinitionError, load_definition, parse_definition
from aggregator.view import Part, anomalies, build_view

MINIMAL = """
name = "w"
[participants.a]
url = "http://127.0.0.1:1"
[[rules]]
state = "ANY"
"""


def _part(name: str, state: str | None, version: int = 1, history: tuple[str, ...] = ()) -> Part:
    now = time.monotonic()
    return Part(
        name,
        state,
        version if state else 0,
        "2026-01-01T00:00:00Z" if state else None,
        now,
        "t",
        "live",
        history=history,
    )


def test_packaged_definition_names_the_four_participants_on_default_ports() -> None:
    """The default definition points at 8001-8004 and is on-demand."""
    d = load_definition()
    assert d.name == "order-fulfilment"
    assert {n: p.url for n, p in d.participants.items()} == {
        "order": "http://127.0.0.1:8001", "payment": "http://127.0.0.1:8002",
        "inventory": "http://127.0.0.1:8003", "shipping": "http://127.0.0.1:8004",
    }  # fmt: skip
    assert d.settings.freshness == "on-demand"


@pytest.mark.parametrize(
    ("states", "overall", "step"),
    [
        (
            {"order": "CONFIRMED", "payment": "AUTHORIZED", "inventory": "RESERVED", "shipping": "SCHEDULED"},
            "COMPLETED",
            None,
        ),
        ({"order": "CANCELLED", "payment": "DECLINED", "inventory": None, "shipping": None}, "FAILED", None),
        (
            {"order": "CANCELLED", "payment": "REFUNDED", "inventory": "REJECTED", "shipping": None},
            "COMPENSATED",
            None,
        ),
        (
            {"order": "PENDING", "payment": "AUTHORIZED", "inventory": "RESERVED", "shipping": "FAILED"},
            "COMPENSATING",
            "inventory",
        ),
        (
            {"order": "PENDING", "payment": "AUTHORIZED", "inventory": "REJECTED", "shipping": None},
            "COMPENSATING",
            "payment",
        ),
        (
            {"order": "PENDING", "payment": "AUTHORIZED", "inventory": None, "shipping": None},
            "IN_PROGRESS",
            "inventory",
        ),
        (
            {"order": "PENDING", "payment": None, "inventory": None, "shipping": None},
            "IN_PROGRESS",
            "payment",
        ),
        ({"order": None, "payment": None, "inventory": None, "shipping": None}, "UNKNOWN", None),
    ],
)
def test_rules_derive_state_and_step_first_match_wins(
    states: dict[str, str | None], overall: str, step: str | None
) -> None:
    """The packaged rules give each saga situation its overall state and the step it waits on."""
    rule = load_definition().derive(states)
    assert rule is not None
    assert (rule.state, rule.step) == (overall, step)


def test_shipping_scheduled_before_payment_seen_is_an_anomaly_not_an_error() -> None:
    """An ordering violated by the parts is reported; satisfied through history it is not."""
    d = load_definition()
    parts = {
        "order": _part("order", "PENDING"),
        "payment": _part("payment", None),
        "inventory": _part("inventory", "RESERVED"),
        "shipping": _part("shipping", "SCHEDULED"),
    }
    found = anomalies(d, parts)
    assert {(a["part"], a["requires"]) for a in found} == {
        ("inventory:RESERVED", "payment:AUTHORIZED"),
        ("shipping:SCHEDULED", "payment:AUTHORIZED"),
    }
    parts["payment"] = _part("payment", "REFUNDED", 2, history=("AUTHORIZED", "REFUNDED"))
    assert anomalies(d, parts) == []
    view = build_view(d, "w", parts, generated_at="now")
    assert view.state == "COMPENSATING"


def test_missing_optional_part_keeps_the_view_complete() -> None:
    """Only required parts make complete false."""
    d = parse_definition(MINIMAL + '[participants.b]\nurl = "http://127.0.0.1:2"\nrequired = false\n')
    from aggregator.view import missing_part

    view = build_view(d, "w", {"a": _part("a", "X"), "b": missing_part("b", "timeout")}, generated_at="now")
    assert view.complete is True
    view = build_view(d, "w", {"a": missing_part("a", "timeout"), "b": _part("b", "X")}, generated_at="now")
    assert view.complete is False


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('name = "w"\n[participants\nx = 1', ["not valid TOML", "line 2"]),
        ("name = 'w'\n[[rules]]\nstate='X'", ["participants", "required"]),
        (
            MINIMAL.replace('url = "http://127.0.0.1:1"', 'url = "ftp://x"'),
            ["participants.a.url", "should match"],
        ),
        (
            MINIMAL.replace('url = "http://127.0.0.1:1"', 'url = "http://127.0.0.1:1"\ntimeout_ms = -5'),
            ["participants.a.timeout_ms", "greater than 0"],
        ),
        (MINIMAL + "surprise = 1\n", ["surprise", "no such field"]),
        (MINIMAL + '[[rules]]\nwhen = { nobody = "X" }\nstate = "Y"\n', ["unknown participant 'nobody'"]),
        (MINIMAL + '[[orderings]]\npart = "a:X"\nrequires = "zz:Y"\n', ["orderings[0]", "zz:Y"]),
        (MINIMAL + '[settings]\nfreshness = "sometimes"\n', ["settings.freshness", "on-demand"]),
    ],
)
def test_invalid_definition_names_file_field_and_expectation(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    """Every error names the file, and the field and what was expected where there is one."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message, message


def test_unreadable_definition_file_is_a_clear_error(tmp_path: Path) -> None:
    """A missing or binary file is a DefinitionError, not a traceback."""
    with pytest.raises(DefinitionError, match="cannot read"):
        load_definition(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DefinitionError, match="not UTF-8"):
        load_definition(tmp_path / "bin.toml")


def test_participant_url_override_is_validated() -> None:
    """--participant NAME=URL must name a known participant and an http(s) URL."""
    d = load_definition()
    assert d.with_urls({"payment": "http://10.0.0.1:9/"}).participants["payment"].url == "http://10.0.0.1:9"
    with pytest.raises(DefinitionError, match="unknown participant"):
        d.with_urls({"billing": "http://x"})
    with pytest.raises(DefinitionError, match=r"participants\.payment\.url"):
        d.with_urls({"payment": "not a url"})


def test_open_initiator_states_follow_the_rules_in_order() -> None:
    """A state is over only when the first rule that can match with the initiator in it looks
    at the initiator alone and is terminal."""
    packaged = load_definition()
    assert packaged.open_initiator_states() == ["PENDING", "CANCELLED"]
    d = parse_definition(
        """
        name = "w"
        initiator = "a"
        [participants.a]
        url = "http://a"
        states = ["NEW", "DONE", "STOPPED", "GONE"]
        [participants.b]
        url = "http://b"
        [[rules]]
        when = { a = "DONE" }
        state = "DONE"
        terminal = true
        [[rules]]
        when = { a = "STOPPED", b = "present" }
        state = "FAILED"
        terminal = true
        [[rules]]
        when = { a = ["STOPPED", "GONE"] }
        state = "STOPPED"
        terminal = true
        [[rules]]
        when = {}
        state = "RUNNING"
        """
    )
    # STOPPED: a terminal rule looking at b may match first, and the next one ends it anyway.
    assert d.open_initiator_states() == ["NEW"]


def test_a_token_from_the_environment_with_a_line_break_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """It would be written into every request's headers: refused at load, without echoing it."""
    monkeypatch.setenv("SAGA_TEST_TOKEN", "secret\r\nX-Evil: 1")
    definition = load_definition()
    payment = definition.participants["payment"].model_copy(update={"token_env": "SAGA_TEST_TOKEN"})
    with pytest.raises(DefinitionError) as caught:
        payment.bearer("payment")
    assert "cannot carry" in str(caught.value)
    assert "secret" not in str(caught.value)
