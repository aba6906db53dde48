"""The example's own processors: validate captured orders, add their customer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import bspump


class ValidateOrder(bspump.Processor):
    """Turns a captured change of the orders table into the order itself; refuses impossible orders.

    An order whose quantity is not positive or whose amount is negative raises, so the pipeline's error
    policy sends it to the dead-letter topic with the reason. Deletes are not orders: they are dropped.
    """

    def process(self, context: bspump.Context, event: Any) -> Any:
        if event["op"] not in ("insert", "update", "snapshot"):
            return None
        order = dict(event["row"])
        if order["quantity"] <= 0:
            raise ValueError(f"order {order['id']}: quantity {order['quantity']} is not positive")
        if order["amount_cents"] < 0:
            raise ValueError(f"order {order['id']}: amount {order['amount_cents']} is negative")
        return order


class AddCustomer(bspump.Processor):
    """Adds the customer's name and country from the ``lookup`` (an on-demand PostgreSQL lookup).

    ``prepare`` queries the customers of a whole batch at once (those not cached), so ``process`` reads the
    lookup like a dict.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {"lookup": "Customers"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.customers = self.app.pump_service.locate_lookup(self.Config.get("lookup"), referrer=self.qualified_id)

    async def prepare(self, events: Sequence[Any]) -> None:
        prefetch = getattr(self.customers, "prefetch", None)
        if prefetch is not None:
            await prefetch(event["customer_id"] for event in events)

    def process(self, context: bspump.Context, event: Any) -> Any:
        customer = self.customers[event["customer_id"]]
        event["customer"] = {"name": customer["name"], "country": customer["country"]}
        return event


class OrderIdAsDocumentId(bspump.Processor):
    """Uses the order id as MongoDB's ``_id``: an order read again is then the same document, never a second."""

    def process(self, context: bspump.Context, event: Any) -> Any:
        event["_id"] = event["id"]
        return event
