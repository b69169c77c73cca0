"""``python -m participants NAME [options]``: run one participant of an installed catalog.

The participants themselves are no part of the framework: a distribution declares a
:class:`~participants.cli.Catalog` in the entry point group :data:`CATALOGS` (this project's
is the example saga, ``order_saga.cli:CATALOG``), and the catalog that names ``NAME`` runs it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from contract.cli import config_error

from .cli import PROG, Catalog
from .cli import main as run_catalog
from .errors import ConfigError

#: The entry point group of the participant catalogs ``python -m participants`` runs.
CATALOGS = "saga_participants.catalogs"


class BrokenCatalog(ConfigError):
    """An entry point of :data:`CATALOGS` does not load, or is not a :class:`Catalog`."""


def installed_catalogs() -> list[Catalog]:
    """Every catalog declared in :data:`CATALOGS`, by entry point name (:class:`BrokenCatalog`)."""
    found = []
    for point in sorted(entry_points(group=CATALOGS), key=lambda p: p.name):
        try:
            catalog = point.load()
        except Exception as exc:  # a stale install, a missing dependency: say which, in one line
            raise BrokenCatalog(f"entry point {point.name} = {point.value!r} of {CATALOGS}: {exc}") from exc
        if not isinstance(catalog, Catalog):
            raise BrokenCatalog(f"entry point {point.name} = {point.value!r} of {CATALOGS} is not a Catalog")
        found.append(catalog)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        catalogs = installed_catalogs()
    except BrokenCatalog as exc:
        return config_error(f"{PROG}: error", exc)
    if not catalogs:
        print(
            f"{PROG}: error: no participants installed (the entry point group {CATALOGS} is empty)",
            file=sys.stderr,
        )
        return 2
    catalog = next((c for c in catalogs if any(a in c.ports for a in argv)), catalogs[0])
    return run_catalog(catalog, argv)


if __name__ == "__main__":
    sys.exit(main())
