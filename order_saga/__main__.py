"""``python -m order_saga NAME [options]`` (and the ``saga-participant`` script): the same as
``python -m participants NAME``, without looking the catalog up."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from participants.cli import main as run_catalog

from .cli import CATALOG


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    return run_catalog(CATALOG, argv)


if __name__ == "__main__":
    sys.exit(main())
