"""What the steering stage reads of the order history, and where from.

Three relations, each an exact part and a final query over it:

* spend per customer: ``sql/steering_spend_sums.sql`` (net spend, the costed lines' revenue and
  cost of goods, exact DECIMAL(38,6) sums) → ``sql/steering_spend.sql`` (cast to DOUBLE);
* net spend per customer and category of the line: ``sql/steering_category_sums.sql`` →
  ``sql/steering_category_spend.sql``;
* contacts and responses per customer, medium and arm: the distinct order times of positive
  lines (``sql/steering_order_times.sql``) joined to the contacts (``sql/steering_responses.sql``).

:class:`OrderHistory` takes the exact parts from the ``orders`` view of a session;
``centile run --state`` takes them from a refresh state
(:class:`centile.refresh.steering.StateHistory`), where they are kept merged by addition and
union. The final queries are the same, so the frames are the same either way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from centile.io.sqlfiles import read_sql


def _over(name: str, rows: str, query: str) -> str:
    return f"WITH {name} AS (\n{rows}\n)\nSELECT * FROM (\n{read_sql(query)}\n) AS result"


def spend_sql(sums: str) -> str:
    """``sql/steering_spend.sql`` over the query ``sums`` (the columns of ``steering_spend_sums.sql``)."""
    return _over("spend_sums", sums, "steering_spend")


def category_sql(sums: str) -> str:
    """``sql/steering_category_spend.sql`` over ``sums`` (the columns of ``steering_category_sums.sql``)."""
    return _over("category_sums", sums, "steering_category_spend")


def responses_sql(times: str) -> str:
    """``sql/steering_responses.sql`` over the order times ``times`` (customer_id, order_ts) and the
    ``contacts`` relation of the connection it runs on."""
    return _over("order_times", times, "steering_responses")


class History(Protocol):
    """Where the steering stage's order history comes from (rows in any order)."""

    def spend(self) -> pl.DataFrame:
        """customer_id, revenue, costed_revenue, cost (``sql/steering_spend.sql``)."""
        ...

    def category_spend(self) -> pl.DataFrame:
        """customer_id, category, revenue (``sql/steering_category_spend.sql``)."""
        ...

    def responses(self, as_of: dt.date, window: int) -> pl.DataFrame:
        """customer_id, medium, control, contacts, responses, last_sent (``sql/steering_responses.sql``)."""
        ...


@dataclass(frozen=True)
class OrderHistory:
    """The history of the ``orders`` view of session ``s`` (every valid line before as_of)."""

    s: Any

    # each a query per customer: on a cluster it runs on the workers, a partition each, and only its
    # per-customer rows come back (:meth:`~centile.backend.session.Session.everywhere`)
    def spend(self) -> pl.DataFrame:
        return self.s.everywhere("steering: spend", _frame, None, spend_sql(read_sql("steering_spend_sums")), None,
                                 tables=("orders", "products"))

    def category_spend(self) -> pl.DataFrame:
        return self.s.everywhere("steering: category spend", _frame, None,
                                 category_sql(read_sql("steering_category_sums")), None, tables=("orders", "products"))

    def responses(self, as_of: dt.date, window: int) -> pl.DataFrame:
        return self.s.everywhere("steering: responses", _frame, None, responses_sql(read_sql("steering_order_times")),
                                 {"as_of": as_of, "window": window}, tables=("orders", "contacts"))


def _frame(s: Any, sql: str, params: dict[str, Any] | None) -> pl.DataFrame:
    return s.frame(sql, params)


__all__ = ["History", "OrderHistory", "category_sql", "responses_sql", "spend_sql"]
