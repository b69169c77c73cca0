"""Tests of the benchmark commands: they run them in quick mode and check the shape of what they write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_quick(which: str, out: Path, timeout: float = 230) -> None:
    """``python -m benchmarks WHICH… --quick --out OUT`` from the checkout; fails the test if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *which.split(), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
