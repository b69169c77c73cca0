"""The four participants of the example order saga (docs/design.md, "Contract"), as specs.

| participant | reacts to                                      | local states                       |
|-------------|------------------------------------------------|------------------------------------|
| order       | POST /orders; payment.declined/refunded; shipping.scheduled | PENDING → CONFIRMED / CANCELLED |
| payment     | order.created; inventory.rejected, shipping.failed | AUTHORIZED / DECLINED → REFUNDED |
| inventory   | payment.authorized; shipping.failed            | RESERVED / REJECTED → RELEASED     |
| shipping    | inventory.reserved                             | SCHEDULED / FAILED                 |

Each handler is a pure decision on (event, current local state); a handler that sees an event
its state cannot take (a compensation for something never done) does nothing, and the event is
still recorded in the inbox. Domain fields the next step needs travel in the events.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from contract import InvalidEvent, WorkflowId
from contract.problem import Handler
from participants import (
    ConfigError,
    Conflict,
    HandlerContext,
    NoSettings,
    Participant,
    ParticipantSpec,
    Transition,
    Unprocessable,
)
from participants.http import SERVICE, read_json_object

from .saga_openapi import orders_api

#: The sku that never has stock.
OUT_OF_STOCK_SKU = "OUT-OF-STOCK"
#: The country shipping always fails for.
UNSHIPPABLE_COUNTRY = "XX"

# -- wire models -----------------------------------------------------------------------------


def _integral(value: object) -> object:
    """A JSON number with no fraction (``1.0``) is an integer, as JSON Schema says."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Item(BaseModel):
    """One order line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    qty: Annotated[StrictInt, Field(ge=1, le=1_000_000), BeforeValidator(_integral)]


class Order(BaseModel):
    """The business content of an order, as it travels in events."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    amount: Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False, strict=True)]
    currency: StrictStr = Field(pattern=r"^[A-Z]{3}$")
    items: list[Item] = Field(min_length=1, max_length=100)
    country: StrictStr = Field(pattern=r"^[A-Z]{2}$")


class OrderRequest(Order):
    """``POST /orders`` body: an :class:`Order` and an optional client-chosen id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: WorkflowId | None = None


def order_of(ctx: HandlerContext[Any]) -> Order:
    """The order the handled event (or command) carries; :class:`InvalidEvent` if it carries none."""
    try:
        return Order.model_validate(ctx.event.domain)
    except ValidationError as exc:
        raise InvalidEvent(
            f"{ctx.event.type} lacks valid order fields: {exc.errors(include_url=False)[0]['msg']}"
        ) from exc


def order_fields(order: Order) -> dict[str, Any]:
    """The order's fields as they travel in events."""
    return order.model_dump(mode="json", include={"amount", "currency", "items", "country"})


# -- order -----------------------------------------------------------------------------------


def _order_ends(state: str, emit: str) -> Any:
    def handler(ctx: HandlerContext[NoSettings]) -> Transition | None:
        if ctx.current is None or ctx.current.state != "PENDING":
            return None
        return Transition(state, emit, {"reason": ctx.event.type})

    return handler


class OrderConflict(Conflict):
    """An ``order_id`` was posted again with a different body."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"order {workflow_id!r} exists with a different body", workflow_id=workflow_id)


Place = Callable[[Participant, str, Order], bool]
"""Starts a workflow for an order: False if it already exists, :class:`OrderConflict` if with another body."""


def post_order_with(place: Place, location: str = "/status/{workflow_id}") -> Handler:
    """The ``POST /orders`` handler that starts a workflow with ``place`` (idempotent on ``order_id``).

    The order service places the order itself (:func:`place_order`); the orchestrator starts
    its own workflow instead. ``location`` is the ``Location`` header's template.
    """

    async def post_order(request: web.Request) -> web.StreamResponse:
        service = request.app[SERVICE]
        raw = await read_json_object(request)
        try:
            order = OrderRequest.model_validate(raw)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors(include_url=False)[:20]
            ]
            raise Unprocessable("the order is invalid", errors=errors) from None
        workflow_id = order.order_id or f"ord-{uuid.uuid4().hex[:16]}"
        place(service, workflow_id, order)  # OrderConflict: a 409 from the framework's error table
        headers = {"Location": location.format(workflow_id=workflow_id)}
        return web.json_response({"workflow_id": workflow_id}, status=202, headers=headers)

    return post_order


def place_order(service: Participant, workflow_id: str, order: Order) -> bool:
    """Record the order as PENDING and enqueue ``order.created``; False if it already exists."""
    fields = order_fields(order)
    return start_once(service, workflow_id, fields, Transition("PENDING", "created", fields))


def start_once(service: Participant, workflow_id: str, fields: dict[str, Any], start: Transition) -> bool:
    """Commit ``start`` as ``workflow_id``'s first state; False if the workflow exists with these
    order ``fields``, :class:`OrderConflict` if it exists with others."""
    with service.transaction() as tx:
        current = tx.get(workflow_id)
        if current is not None:
            if {k: current.data.get(k) for k in fields} != fields:
                raise OrderConflict(workflow_id)
            return False
        service.commit(tx, workflow_id, None, start, cause=None)
    return True


def _order_routes(app: web.Application) -> None:
    app.router.add_post("/orders", post_order_with(place_order))  # described by saga_openapi.orders_api


ORDER = ParticipantSpec(
    name="order",
    handlers={
        "payment.declined": _order_ends("CANCELLED", "cancelled"),
        "payment.refunded": _order_ends("CANCELLED", "cancelled"),
        "shipping.scheduled": _order_ends("CONFIRMED", "confirmed"),
    },
    settings=NoSettings(),
    routes=_order_routes,
    openapi_paths=orders_api(OrderRequest),
)

# -- payment ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentSettings:
    """The payment service's own settings."""

    payment_limit: float = field(
        default=1000.0, metadata={"help": "decline amounts above this (default 1000)"}
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.payment_limit) and self.payment_limit >= 0):
            raise ConfigError(f"--payment-limit must be a finite number >= 0 (got {self.payment_limit})")


def _authorize(ctx: HandlerContext[PaymentSettings]) -> Transition | None:
    if ctx.current is not None:
        return None
    order = order_of(ctx)
    if order.amount > ctx.settings.payment_limit:
        return Transition(
            "DECLINED", "declined", {"amount": order.amount, "reason": "amount above payment limit"}
        )
    return Transition("AUTHORIZED", "authorized", order_fields(order))


def _refund(ctx: HandlerContext[PaymentSettings]) -> Transition | None:
    if ctx.current is None or ctx.current.state != "AUTHORIZED":
        return None
    return Transition("REFUNDED", "refunded", {"reason": ctx.event.type})


PAYMENT = ParticipantSpec(
    name="payment",
    handlers={
        "order.created": _authorize,
        "inventory.rejected": _refund,
        "shipping.failed": _refund,
    },
    settings=PaymentSettings(),
)

# -- inventory -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InventorySettings:
    """The inventory service's own settings."""

    initial_stock: int = field(default=10_000, metadata={"help": "stock of each new sku (default 10000)"})

    def __post_init__(self) -> None:
        if self.initial_stock < 0:
            raise ConfigError(f"--initial-stock must be >= 0 (got {self.initial_stock})")


_STOCK_SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL);
"""


def _reserve(ctx: HandlerContext[InventorySettings]) -> Transition | None:
    if ctx.current is not None:
        return None
    order = order_of(ctx)
    wanted = Counter[str]()
    for item in order.items:
        wanted[item.sku] += item.qty
    for sku in wanted:
        initial = 0 if sku == OUT_OF_STOCK_SKU else ctx.settings.initial_stock
        ctx.db.execute("INSERT OR IGNORE INTO stock (sku, available) VALUES (?, ?)", (sku, initial))
    short = [
        sku
        for sku, qty in wanted.items()
        if ctx.db.execute("SELECT available FROM stock WHERE sku = ?", (sku,)).fetchone()[0] < qty
    ]
    if short:
        return Transition("REJECTED", "rejected", {"reason": "insufficient stock", "short": short})
    ctx.db.executemany(
        "UPDATE stock SET available = available - ? WHERE sku = ?",
        [(q, s) for s, q in wanted.items()],
    )
    return Transition("RESERVED", "reserved", order_fields(order))


def _release(ctx: HandlerContext[InventorySettings]) -> Transition | None:
    if ctx.current is None or ctx.current.state != "RESERVED":
        return None
    for item in ctx.current.data.get("items", []):
        ctx.db.execute("UPDATE stock SET available = available + ? WHERE sku = ?", (item["qty"], item["sku"]))
    return Transition("RELEASED", "released", {"reason": ctx.event.type})


INVENTORY = ParticipantSpec(
    name="inventory",
    handlers={"payment.authorized": _reserve, "shipping.failed": _release},
    settings=InventorySettings(),
    schema=_STOCK_SCHEMA,
)

# -- shipping --------------------------------------------------------------------------------


def _schedule(ctx: HandlerContext[NoSettings]) -> Transition | None:
    if ctx.current is not None:
        return None
    order = order_of(ctx)
    if order.country == UNSHIPPABLE_COUNTRY:
        return Transition(
            "FAILED",
            "failed",
            {"country": order.country, "reason": "no carrier serves the country"},
        )
    return Transition("SCHEDULED", "scheduled", {"country": order.country})


SHIPPING = ParticipantSpec(name="shipping", handlers={"inventory.reserved": _schedule}, settings=NoSettings())

#: The saga's participants by name, in their default-port order (8001-8004).
SPECS: dict[str, ParticipantSpec[Any]] = {s.name: s for s in (ORDER, PAYMENT, INVENTORY, SHIPPING)}
DEFAULT_PORTS: dict[str, int] = {name: 8001 + i for i, name in enumerate(SPECS)}
