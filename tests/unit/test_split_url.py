"""``split_url`` reads a URL exactly as ``urlsplit`` does (the pool's request line and Host header)."""

from __future__ import annotations

import random
import re
from urllib.parse import urlsplit

import pytest

from aggregator._http1 import split_url


def _as_urlsplit_reads_it(url: str) -> tuple[str, str, int, str, str]:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return (
        parts.scheme,
        parts.hostname or "",
        parts.port or (443 if parts.scheme == "https" else 80),
        parts.netloc,
        target,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8002/status?workflow_id=a&workflow_id=b",
        "http://127.0.0.1:8002/status/ord%3A1",
        "HTTPS://Example.COM/status/x",
        "https://example.com/a?",
        "http://example.com?x=1/2",
        "http://example.com",
        "http://user@[::1]:9/x?y#frag",
        "http://h/x\ty",
        " http://h/x",
        "http://h/x ",
        "http://h:80/x?a=1?b=2",
        "//h/x",
        "no scheme/x",
        "weird scheme://h/x",
    ],
)
def test_split_url_reads_as_urlsplit(url: str) -> None:
    assert split_url(url) == _as_urlsplit_reads_it(url)
    assert split_url(url) == _as_urlsplit_reads_it(url)  # again, from the remembered origin


def test_split_url_reads_generated_urls_as_urlsplit() -> None:
    rng = random.Random(3)
    pieces = [
        "http",
        "https",
        "://",
        "/",
        "?",
        "#",
        "&",
        "=",
        ":",
        "@",
        "[::1]",
        "h",
        "H",
        "8",
        " ",
        "\t",
        "%",
        "a",
    ]
    for _ in range(20_000):
        url = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.5:  # mostly well-formed: the common path
            url = rng.choice(["http://", "HTTPS://", "http://[::1]:8", "http://h:1"]) + url
        try:
            expected = _as_urlsplit_reads_it(url)
        except ValueError as exc:
            with pytest.raises(ValueError, match=re.escape(str(exc))):
                split_url(url)
            continue
        assert split_url(url) == expected, url
