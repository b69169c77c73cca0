"""Everything of the example saga in one process: a broker and the four participants.

``python -m order_saga.demo`` places one order per saga outcome and prints where each ended.
The aggregator's demo (:mod:`order_saga.aggregator_demo`) builds on :func:`local_saga`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from contract import BrokerURL, reach
from participants import ParticipantConfig, ParticipantService

from .embedded_broker import local_broker
from .saga import SPECS, place_order
from .samples import SAMPLES


@dataclass
class LocalSaga:
    """A running broker and the four participants."""

    broker: BrokerURL
    prefix: str
    services: dict[str, ParticipantService]

    def states(self, workflow_id: str) -> dict[str, str | None]:
        """Each participant's local state of ``workflow_id`` (None where it has no record)."""
        found = {name: svc.store.status(workflow_id) for name, svc in self.services.items()}
        return {name: s.state if s else None for name, s in found.items()}


#: How long the participants may take to connect and subscribe (a clustered broker that lost a
#: node may first have to elect new leaders for their consumers).
READY_TIMEOUT_S = 60.0


@contextlib.asynccontextmanager
async def local_saga(
    *,
    broker: BrokerURL | None = None,
    prefix: str = "saga",
    data_dir: Path | None = None,
    ports: dict[str, int] | None = None,
) -> AsyncIterator[LocalSaga]:
    """A broker (see :func:`local_broker`) and the four participants, connected and ready."""
    async with contextlib.AsyncExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="saga-demo-")))
        url = await stack.enter_async_context(local_broker(broker))
        if broker is not None:
            # Asked once before anything starts: a broker that is not there is one line within
            # seconds (BrokerUnreachable), not a minute of reconnect warnings from each participant.
            await reach(broker)
        services = {}
        for name, spec in SPECS.items():
            config = ParticipantConfig(
                port=(ports or {}).get(name, 0), broker=url, prefix=prefix, db=data_dir / f"{name}.sqlite3"
            )
            services[name] = await stack.enter_async_context(ParticipantService(spec, config=config))
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                for svc in services.values():
                    await svc.wait_ready()
        except TimeoutError:
            waiting = [name for name, svc in services.items() if not svc.ready]
            raise RuntimeError(
                f"{', '.join(waiting)} not connected to the broker {url} within {READY_TIMEOUT_S:.0f}s"
            ) from None
        yield LocalSaga(broker=url, prefix=prefix, services=services)


async def run_samples(saga: LocalSaga, *, timeout: float = 15.0) -> dict[str, tuple[str, bool]]:
    """Place every sample order; return ``{outcome: (workflow_id, ended as expected)}``."""
    placed = {}
    for outcome, sample in SAMPLES.items():
        workflow_id = f"demo-{outcome}"
        place_order(saga.services["order"], workflow_id, sample.order)
        placed[outcome] = workflow_id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if all(saga.states(wf) == SAMPLES[o].parts for o, wf in placed.items()):
            break
        await asyncio.sleep(0.05)
    return {o: (wf, saga.states(wf) == SAMPLES[o].parts) for o, wf in placed.items()}


async def _main(broker: str | None) -> int:
    async with local_saga(broker=BrokerURL.parse(broker) if broker else None) as saga:
        print(
            f"broker {saga.broker}; participants: "
            + ", ".join(f"{n} {s.url}" for n, s in saga.services.items())
        )
        results = await run_samples(saga)
        for outcome, (wf, ok) in results.items():
            print(f"{'ok  ' if ok else 'FAIL'} {outcome:13} {wf:18} {saga.states(wf)}")
    return 0 if all(ok for _, ok in results.values()) else 1


def main() -> int:
    """``python -m order_saga.demo [--broker URL]``."""
    parser = argparse.ArgumentParser(prog="python -m order_saga.demo", description=__doc__)
    parser.add_argument("--broker", help="MQTT broker URL (default: start a private one)")
    args = parser.parse_args()
    return asyncio.run(_main(args.broker))


if __name__ == "__main__":
    raise SystemExit(main())
