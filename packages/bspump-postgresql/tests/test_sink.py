"""PostgreSQLSink's planning (columns, upsert collapsing, changes) and its splitting of failed transactions.

The splitting tests replace the one method that talks to the server (``_apply``) with a stand-in that refuses
rows the way PostgreSQL does: the whole transaction fails if any row in it is bad.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from bspump import Batch, ConfigError, Delivery, ErrorKind, Pipeline
from bspump.postgresql import PostgreSQLConnection, PostgreSQLSink
from bspump.postgresql.sink import COPY, DELETE, UPSERT, Rows
from bspump.testing import make_app


def sink(**config: Any) -> PostgreSQLSink:
    app = make_app()
    app.pump_service.add_connection(PostgreSQLConnection(app, "PostgreSQLConnection"))
    return PostgreSQLSink(app, Pipeline(app, "P"), config={"table": "app.orders", **config})


def test_table_and_schema() -> None:
    plain = sink()
    assert (plain.schema, plain.table, plain.table_sql) == ("app", "orders", '"app"."orders"')
    assert sink(table="orders", schema="s").table_sql == '"s"."orders"'


def flat(groups: list[Rows]) -> list[tuple[int, str, tuple[str, ...], tuple[object, ...]]]:
    """(index, action, columns, values) of every row, in batch order."""
    rows = [(i, g.action, g.columns, v) for g in groups for i, v in zip(g.indexes, g.values, strict=True)]
    return sorted(rows, key=lambda row: row[0])


def test_rows_take_each_events_keys_as_columns_by_default() -> None:
    groups, failures = sink().plan([{"id": 1, "name": "a"}, {"id": 2}, {"id": 3, "name": "c"}, 4])
    assert [f.index for f in failures] == [3]
    assert [(g.columns, g.indexes) for g in groups] == [(("id", "name"), [0, 2]), (("id",), [1])]
    assert flat(groups) == [(0, COPY, ("id", "name"), (1, "a")), (1, COPY, ("id",), (2,)),
                            (2, COPY, ("id", "name"), (3, "c"))]


def test_a_column_mapping_picks_and_renames_fields() -> None:
    groups, _ = sink(columns="id, name=full_name, note").plan([{"id": 1, "full_name": "Ann", "other": 0}])
    assert flat(groups) == [(0, COPY, ("id", "name", "note"), (1, "Ann", None))]
    with pytest.raises(ConfigError, match="columns"):
        sink(columns="id, name=")


def test_upsert_collapses_rows_with_the_same_key_to_the_last() -> None:
    groups, failures = sink(mode="upsert", keys="id").plan(
        [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 1, "v": "c"}, {"v": "no key"}, {"id": None, "v": "x"}])
    assert [(index, values) for index, _, _, values in flat(groups)] == [(1, (2, "b")), (2, (1, "c"))]
    assert [f.index for f in failures] == [3, 4]
    assert all(f.kind is ErrorKind.PERMANENT for f in failures)
    assert "no key column 'id'" in str(failures[0].error) and "NULL" in str(failures[1].error)


def test_an_unhashable_key_is_a_failure_of_its_event_only() -> None:
    groups, failures = sink(mode="upsert", keys="id").plan([{"id": [1], "v": "a"}, {"id": 2, "v": "b"}])
    assert [f.index for f in failures] == [0] and "not a plain value" in str(failures[0].error)
    assert [index for index, *_ in flat(groups)] == [1]


def test_upsert_needs_keys_and_changes_need_upsert() -> None:
    with pytest.raises(ConfigError, match="keys"):
        sink(mode="upsert")
    with pytest.raises(ConfigError, match="events"):
        sink(events="changes")
    with pytest.raises(ConfigError, match="key columns"):
        sink(mode="upsert", keys="id", columns="name")


def test_changes_upsert_rows_and_delete_keys_the_last_change_of_a_key_winning() -> None:
    changes = [
        {"op": "insert", "key": {"id": 1}, "row": {"id": 1, "v": "a"}},
        {"op": "update", "key": {"id": 2}, "row": {"id": 2, "v": "b"}},
        {"op": "delete", "key": {"id": 1}, "row": None},
        {"op": "snapshot", "key": {"id": 3}, "row": {"id": 3, "v": "c"}},
        {"op": "truncate", "tables": ["app.orders"]},
        "not a change",
    ]
    groups, failures = sink(mode="upsert", keys="id", events="changes").plan(changes)
    assert flat(groups) == [
        (1, UPSERT, ("id", "v"), (2, "b")), (2, DELETE, ("id",), (1,)), (3, UPSERT, ("id", "v"), (3, "c"))]
    assert [f.index for f in failures] == [4, 5]


class RefusingSink(PostgreSQLSink):
    """Stands in for the server: a transaction holding a row with ``bad`` fails whole, like a constraint."""

    def __init__(self, *args: Any, error: BaseException | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transactions: list[list[int]] = []
        self.committed: list[int] = []
        self.error = error

    async def _apply(self, groups: list[Rows]) -> None:
        rows = flat(groups)
        self.transactions.append([index for index, *_ in rows])
        if any(dict(zip(columns, values, strict=True)).get("bad") for _, _, columns, values in rows):
            raise self.error or asyncpg.exceptions.CheckViolationError("new row violates check constraint")
        self.committed.extend(index for index, *_ in rows)


def refusing(error: BaseException | None = None) -> RefusingSink:
    app = make_app()
    app.pump_service.add_connection(PostgreSQLConnection(app, "PostgreSQLConnection"))
    return RefusingSink(app, Pipeline(app, "P"), config={"table": "t"}, error=error)


def test_a_failed_batch_is_split_until_only_the_bad_rows_fail() -> None:
    target = refusing()
    events = [{"id": n, "bad": n in (3, 17)} if n % 2 else {"id": n, "bad": n in (3, 17), "odd": False}
              for n in range(32)]  # two groups of columns, split across
    failures = asyncio.run(target.write(Batch(events, Delivery())))
    assert failures is not None
    assert sorted(f.index for f in failures) == [3, 17]
    assert all(f.kind is ErrorKind.PERMANENT and "check constraint" in str(f.error) for f in failures)
    assert sorted(target.committed) == [n for n in range(32) if n not in (3, 17)]
    assert len(target.transactions) <= 2 * 2 * 5 + 1  # two bad rows: at most two paths of log2(32) splits


def test_a_good_batch_is_one_transaction() -> None:
    target = refusing()
    assert asyncio.run(target.write(Batch([{"id": n} for n in range(100)], Delivery()))) is None
    assert target.transactions == [list(range(100))]


def test_a_transient_failure_is_not_split_but_raised_for_the_base_class_to_retry() -> None:
    target = refusing(error=asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    with pytest.raises(asyncpg.exceptions.DeadlockDetectedError):
        asyncio.run(target.write(Batch([{"id": 1}, {"id": 2, "bad": True}], Delivery())))
    assert len(target.transactions) == 1


def test_a_transient_failure_after_a_split_hands_back_only_the_unwritten_rows() -> None:
    target = refusing()
    errors = iter([asyncpg.exceptions.CheckViolationError("check"), asyncpg.exceptions.DeadlockDetectedError("dl")])
    original = target._apply

    async def first_refused_then_deadlocked(groups: list[Rows]) -> None:
        error = next(errors, None)
        if error is not None and len(target.transactions) < 2:
            target.transactions.append([index for index, *_ in flat(groups)])
            raise error
        await original(groups)

    target._apply = first_refused_then_deadlocked  # type: ignore[method-assign]
    failures = asyncio.run(target.write(Batch([{"id": n} for n in range(4)], Delivery())))
    assert failures is not None
    assert [(f.index, f.kind) for f in failures] == [(0, None), (1, None)]  # the deadlocked half, to retry
    assert target.committed == [2, 3]
