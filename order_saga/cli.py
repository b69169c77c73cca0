"""The example saga's command line: ``python -m participants NAME`` (docs/design.md, "Participants").

:data:`CATALOG` names the four participants and the orchestrator, with their default ports, and
adds the coordination options (docs/design.md, "Coordination strategies"). It is declared in
the entry point group ``saga_participants.catalogs``, which ``python -m participants`` reads.
"""

from __future__ import annotations

import argparse
from typing import Any

from contract import ORCHESTRATOR
from participants import ConfigError, ParticipantSpec
from participants.cli import Catalog

from .saga import DEFAULT_PORTS, SPECS

#: Default HTTP ports: the four participants', and the orchestrator's.
PORTS = {**DEFAULT_PORTS, ORCHESTRATOR: 8010}


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--coordination",
        choices=["choreography", "orchestrated"],
        default="choreography",
        help="choreography: react to the other participants' events (default); orchestrated: act on "
        "the orchestrator's commands from PREFIX/command/NAME/ACTION instead",
    )
    p.add_argument(
        "--front-controller",
        action="store_true",
        help="order only: also consume every saga event, keep the whole workflow and answer "
        "GET /workflows/ID (the front-controller strategy)",
    )


def _choose(args: argparse.Namespace, spec: ParticipantSpec[Any] | None) -> ParticipantSpec[Any]:
    """The spec under the coordination the options ask for."""
    if spec is None:  # the orchestrator: it has no settings
        if args.coordination != "choreography" or args.front_controller:
            raise ConfigError("the orchestrator takes neither --coordination nor --front-controller")
        from .coordination import ORCHESTRATOR_SPEC  # loads the aggregator's rule engine

        return ORCHESTRATOR_SPEC
    if args.front_controller:
        if args.name != "order":
            raise ConfigError("--front-controller is for the order service, which starts every workflow")
        if args.coordination != "choreography":
            raise ConfigError(
                "--front-controller coordinates a choreography: drop --coordination orchestrated"
            )
        from .coordination import front_controller

        return front_controller(spec)
    if args.coordination == "orchestrated":
        from .coordination import orchestrated

        return orchestrated(spec)
    return spec


#: The example saga's participants, for ``python -m participants``.
CATALOG = Catalog(
    description="Run one participant of the example order saga.",
    ports=PORTS,
    specs=SPECS,
    add_arguments=_add_arguments,
    choose=_choose,
)
