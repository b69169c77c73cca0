"""The reconnect loop both sides keep their broker links with, and the checks a link needs.

aiomqtt 2.x does not reconnect by itself: a link is a fresh client entered in a loop. The loop
(:func:`stay_connected`) connects to the first node that answers; when its node is lost or
refuses it, it moves on to the next one at once, and backs off (capped, jittered delays) only
after a whole round of nodes failed. It starts again quickly after a link that stayed up a
while, but keeps backing off when links keep dropping at once (another client taking over the
same client id, a broker refusing us). It logs one INFO line when a link comes up and one
WARNING line (node address and reason, no traceback) for every failed or lost link.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from .broker import MASK, PASSWORD_ENV, BrokerURL, _current_link, _Link
from .errors import BrokerUnreachable

#: A link that stayed up this long resets the reconnect backoff.
STABLE_S = 5.0
_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 2.0
#: The first warning step of a node that keeps failing for one reason; each step doubles it.
WARN_FIRST_S = 10.0
#: The longest warning step: a node down for hours is still named every few minutes.
WARN_MAX_S = 300.0


class SubscriptionRefused(aiomqtt.MqttError):
    """The broker answered a SUBSCRIBE with a failure code: the link is useless, make it again."""


async def subscribe(client: aiomqtt.Client, topics: list[str], *, qos: int = 1) -> None:
    """Subscribe to ``topics`` and check the broker's answer for each of them.

    aiomqtt returns the SUBACK codes without looking at them, and a broker may refuse a
    subscription while the link stays up (a clustered broker that cannot create its consumer
    while it elects a leader): the client would wait for ever on a topic it never receives.
    A refusal raises :class:`SubscriptionRefused`, so :func:`stay_connected` makes the link again.
    """
    granted = await client.subscribe([(topic, qos) for topic in topics])
    codes = [code.value if isinstance(code, ReasonCode) else code for code in granted]
    refused = [topic for topic, code in zip(topics, codes, strict=False) if code >= 0x80]
    if refused or len(granted) != len(topics):
        raise SubscriptionRefused(f"the broker refused the subscription to {', '.join(refused or topics)}")


#: CONNACK codes (MQTT 3.1.1 and 5) that mean the broker did not accept our credentials.
_AUTH_CODES = frozenset({4, 5, 134, 135})


def describe(exc: BaseException) -> str:
    """A one-line, readable reason for a failed or lost broker link (no traceback)."""
    if isinstance(exc, MqttConnectError):
        rc = exc.rc
        code: int | None
        if isinstance(rc, ReasonCode):
            text, code = str(rc), rc.value
        else:  # an int CONNACK code: aiomqtt's own message names it, str() would not
            text, code = Exception.__str__(exc), rc
        hint = f"; check the user name and password ({PASSWORD_ENV})" if code in _AUTH_CODES else ""
        return f"refused by the broker: {text} (CONNACK code {code}){hint}"
    if isinstance(exc, aiomqtt.MqttCodeError) and isinstance(exc.rc, ReasonCode):
        return f"{exc.rc} (code {exc.rc.value})"
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip()
    return text or type(exc).__name__


async def reach(broker: BrokerURL, *, timeout: float = 5.0) -> BrokerURL:
    """Connect once to each node of ``broker`` in turn (a clean session under a throwaway client
    id, so no persistent session is touched) and return the first node that accepts.

    For a program that cannot do anything without the broker (the demo): an address where
    nothing listens, a host that does not resolve, refused credentials become one
    :class:`BrokerUnreachable` within ``timeout`` seconds in all, naming each node and its
    reason, instead of a reconnect loop retrying for ever.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reasons = []
    for node in broker.nodes:
        left = deadline - loop.time()
        try:
            if left <= 0:
                raise TimeoutError
            async with asyncio.timeout(left):
                identifier = f"reach-{uuid.uuid4().hex[:12]}"
                async with node.client(identifier=identifier, clean_session=True, timeout=left):
                    return node
        except TimeoutError:
            reasons.append((node, f"no answer within {timeout:g}s"))
        except (aiomqtt.MqttError, OSError) as exc:
            reason = describe(exc)
            if broker.password:
                reason = reason.replace(broker.password, MASK)
            reasons.append((node, reason))
    if len(reasons) == 1:
        raise BrokerUnreachable(f"cannot connect to the broker {reasons[0][0]} ({reasons[0][1]})")
    raise BrokerUnreachable(
        f"cannot connect to any node of the broker {broker}: "
        + "; ".join(f"{node.address} ({reason})" for node, reason in reasons)
    )


async def stay_connected(
    session: Callable[[], Awaitable[None]],
    *,
    broker: BrokerURL,
    who: str,
    log: logging.Logger,
    transient: tuple[type[Exception], ...] = (),
) -> NoReturn:
    """Run ``session`` (one broker link, start to end) again and again until cancelled.

    ``session`` makes its client with :meth:`BrokerURL.client`; entering it logs ``connected``
    (INFO). ``session`` ends by returning or by raising :class:`aiomqtt.MqttError` or one of
    ``transient`` (also inside an exception group); either is logged as one WARNING line with
    the broker address (password masked), the reason and the retry delay, then the link is made
    again after a capped, jittered backoff. Stopping is the caller's job: cancel the task (on
    Python 3.11 a cancellation may be turned into the link's ``MqttError`` by aiomqtt, so
    cancel until done, see :func:`contract.tasks.cancel_and_wait`).
    """
    loop = asyncio.get_running_loop()
    errors: tuple[type[Exception], ...] = (aiomqtt.MqttError, *transient)
    link = _Link(who=who, broker=broker, log=log)
    token = _current_link.set(link)
    try:
        await _reconnect_loop(session, link, errors, loop)
    finally:
        _current_link.reset(token)


async def _reconnect_loop(
    session: Callable[[], Awaitable[None]],
    link: _Link,
    errors: tuple[type[Exception], ...],
    loop: asyncio.AbstractEventLoop,
) -> NoReturn:
    who, broker, log = link.who, link.broker, link.log
    count = len(broker.nodes)
    delay = _FIRST_DELAY_S
    tried = 0  # nodes tried since the last stable link, or since the last backoff
    quiet: dict[int, _Failing] = {}  # per node index: its run of failed connects
    while True:
        started = loop.time()
        link.up = False
        reason = "session ended"
        try:
            await session()
        except* errors as group:
            reason = "; ".join(describe(e) for e in group.exceptions)
        if broker.password:
            reason = reason.replace(broker.password, MASK)
        stable = loop.time() - started >= STABLE_S
        if stable:
            delay = _FIRST_DELAY_S  # the link was up a while: the first retry is quick
        node, at = link.node, link.at
        # A link that dropped at once (refused, taken over) counts as a failed try: a round of
        # those backs off, as failed connects do, instead of cycling through the nodes at speed.
        tried = 1 if stable else tried + 1
        link.at = (link.at + 1) % count
        if tried < count:
            pause = _FIRST_DELAY_S * random.uniform(0.5, 1.0)  # straight on to the next node
        else:
            pause = delay * random.uniform(0.5, 1.0)
            delay = min(delay * 2, _MAX_DELAY_S)
            tried = 0
        lost = link.up
        if lost:
            quiet.clear()  # a link came up: every node's next failure is news again
        if count == 1:
            then = f"{'reconnecting' if lost else 'retrying'} in {pause:.2f}s"
        else:
            then = f"{'moving to' if lost else 'trying'} {link.node} in {pause:.2f}s"
        if lost:
            log.warning("%s: broker link to %s lost (%s); %s", who, node, reason, then)
        else:
            link.failures += 1
            failing = quiet.get(at)
            now = loop.time()
            if failing is None or failing.reason != reason:
                quiet[at] = _Failing(reason=reason, since=now, due=now + WARN_FIRST_S, step=WARN_FIRST_S)
                log.warning("%s: cannot connect to %s (%s); %s", who, node, reason, then)
            else:
                failing.attempts += 1
                if now < failing.due:
                    log.debug("%s: cannot connect to %s (%s); %s", who, node, reason, then)
                else:
                    failing.step = min(failing.step * 2, WARN_MAX_S)
                    failing.due = now + failing.step
                    log.warning(
                        "%s: cannot connect to %s (%s; %d attempts in %.0fs); %s (next warning in %.0fs)",
                        who,
                        node,
                        reason,
                        failing.attempts,
                        now - failing.since,
                        then,
                        failing.step,
                    )
        await asyncio.sleep(pause)


@dataclass(slots=True)
class _Failing:
    """A node's run of connects that failed for one reason, and when to warn about it next."""

    reason: str
    since: float
    due: float
    step: float
    attempts: int = 1
