"""The documentation site builds with warnings as errors, and its reference pages are made from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as ``sphinx-build -W --keep-going -b html docs OUT`` builds it (no network)."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, f"sphinx-build failed:\n{build.stdout}\n{build.stderr}"
    return out


def test_site_builds_without_warnings(site: Path) -> None:
    """Every page builds, every reference resolves, every page is in a table of contents."""
    assert (site / "index.html").is_file()


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("reference/http.html", ["/workflows/{workflow_id}/watch", "/status/{workflow_id}", "staleness_ms"]),
        ("reference/definition.html", ["stall_after_ms", "[participants.NAME.status]", "not_found"]),
        ("reference/cli.html", ["python -m aggregator serve", "--redrive", "--payment-limit"]),
        ("reference/metrics.html", ["aggregator_stalled_workflows", "participant_outbox_unsent"]),
        ("reference/python.html", ["aggregator.Aggregator", "aggregator.asgi.lifespan"]),
    ],
)
def test_reference_pages_are_made_from_the_code(site: Path, page: str, expected: list[str]) -> None:
    """The generated blocks were filled in, with names only the code knows."""
    html = (site / page).read_text(encoding="utf-8")
    assert "<!-- generated:" not in html
    for text in expected:
        assert text in html, f"{page} does not mention {text}"
