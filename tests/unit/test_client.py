"""The participant client's URLs: every id is percent-encoded exactly as ``quote(id, safe="")`` would."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from aggregator._client import _quoted

from .fakes import FakeTransport, upstream_rig


@pytest.mark.parametrize(
    "text",
    ["ord-42", "a_b.c-D9", "A" * 128, "ord:42", "a b", "../x", "a/b", "?x=1&y", "é", "x\n", "~", "%41", ""],
)
def test_ids_are_quoted_as_quote_would(text: str) -> None:
    assert _quoted(text) == quote(text, safe="")


async def test_batch_and_single_calls_carry_the_ids_as_they_are() -> None:
    """Ids with characters to encode come through to the participant unchanged, one alone and in a batch."""
    ids = ["ord:1", "w-2", "w.3"]
    fake = FakeTransport(records={"payment": {w: ("AUTHORIZED", 1) for w in ids}})
    async with upstream_rig(fake) as rig:
        loop = asyncio.get_running_loop()
        await rig.upstream.get("ord:1", until=loop.time() + 1)
        parts = await asyncio.gather(*(rig.upstream.get(w, until=loop.time() + 1) for w in ids))
    assert [p.state for p in parts] == ["AUTHORIZED"] * 3
    assert [(c.ids, c.batch) for c in fake.calls] == [(("ord:1",), False), (tuple(ids), True)]
