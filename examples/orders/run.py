"""The orders example, end to end, in one command: ``python examples/orders/run.py`` (or ``./dev example``).

1. Starts PostgreSQL, Kafka, Elasticsearch and MongoDB (FerretDB) through the test harness
   (``tests-integration/servers/run.sh``; skipped when ``BSPUMP_SERVERS_EXTERNAL`` is set).
2. Creates a schema with customers and an empty orders table, and Kafka topics, all named for this run.
3. Starts the pump (``bspump run examples/orders/pipelines.conf``) as a separate process.
4. Inserts ``--orders`` orders in transactions of ``--transaction`` rows; every ``--bad-every``-th order
   has a quantity of 0, which the pump must reject to the dead-letter topic.
5. Shows progress every second, then counts rows, messages and documents on every side and checks that
   they agree: good orders in Kafka, Elasticsearch and MongoDB (each with its customer), bad ones in the
   dead-letter topic with their reason. The last line is JSON; the exit code is 0 when everything agrees.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from elasticsearch import AsyncElasticsearch, NotFoundError
from pymongo import AsyncMongoClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HARNESS = ROOT / "tests-integration" / "servers" / "run.sh"
SERVERS = ("postgresql", "kafka", "elasticsearch", "ferretdb")
CUSTOMERS = [(n, f"customer {n}", ("CZ", "DE", "FR", "US")[n % 4]) for n in range(1, 51)]


@dataclass
class Servers:
    """Where the servers answer (the test harness's defaults, overridable like the integration tests)."""

    postgres_dsn: str = field(default_factory=lambda: os.environ.get(
        "BSPUMP_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    kafka: str = field(default_factory=lambda: os.environ.get("BSPUMP_TEST_KAFKA", "127.0.0.1:9092"))
    elasticsearch: str = field(default_factory=lambda: os.environ.get(
        "BSPUMP_TEST_ELASTICSEARCH_URL", "http://127.0.0.1:9200"))
    mongodb: str = field(default_factory=lambda: os.environ.get(
        "BSPUMP_TEST_MONGODB_URI", "mongodb://127.0.0.1:27017/"))


@dataclass
class Names:
    """The names this run creates (and removes at the end unless ``--keep``)."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def schema(self) -> str:
        return f"orders_{self.run}"

    @property
    def slot(self) -> str:
        return f"orders_{self.run}"

    @property
    def topic(self) -> str:
        return f"orders-{self.run}"

    @property
    def dead_topic(self) -> str:
        return f"orders-{self.run}-rejected"

    @property
    def index(self) -> str:
        return f"orders-{self.run}"

    @property
    def database(self) -> str:
        return f"orders_{self.run}"

    @property
    def partitions(self) -> dict[str, int]:
        """The topics this run creates, with their partition counts."""
        return {self.topic: 3, self.dead_topic: 1}


@dataclass
class Counts:
    postgresql: int = 0
    kafka: int = 0
    rejected: int = 0
    elasticsearch: int = 0
    mongodb: int = 0

    def line(self) -> str:
        return (f"postgresql {self.postgresql:>6} | kafka {self.kafka:>6} (+{self.rejected} rejected)"
                f" | elasticsearch {self.elasticsearch:>6} | mongodb {self.mongodb:>6}")


def pump_environment(servers: Servers, names: Names) -> dict[str, str]:
    return {**os.environ,
            "ORDERS_POSTGRES_DSN": servers.postgres_dsn, "ORDERS_KAFKA": servers.kafka,
            "ORDERS_ELASTICSEARCH_URL": servers.elasticsearch, "ORDERS_MONGODB_URI": servers.mongodb,
            "ORDERS_MONGODB_DATABASE": names.database, "ORDERS_SCHEMA": names.schema,
            "ORDERS_SLOT": names.slot, "ORDERS_PUBLICATION": names.slot,
            "ORDERS_TOPIC": names.topic, "ORDERS_DEAD_TOPIC": names.dead_topic, "ORDERS_INDEX": names.index}


def start_servers() -> None:
    if os.environ.get("BSPUMP_SERVERS_EXTERNAL"):
        print("servers: external (BSPUMP_SERVERS_EXTERNAL is set)")
        return
    print(f"servers: starting {', '.join(SERVERS)} through {HARNESS.relative_to(ROOT)}")
    subprocess.run(["bash", str(HARNESS), "start", *SERVERS], check=True)


async def create(servers: Servers, names: Names) -> None:
    db = await asyncpg.connect(servers.postgres_dsn)
    try:
        await db.execute(f"""
            CREATE SCHEMA {names.schema};
            CREATE TABLE {names.schema}.customers (id int PRIMARY KEY, name text NOT NULL, country text NOT NULL);
            CREATE TABLE {names.schema}.orders (
                id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES {names.schema}.customers,
                item text NOT NULL, quantity int NOT NULL, amount_cents bigint NOT NULL,
                placed_at timestamptz NOT NULL DEFAULT now());
        """)
        await db.copy_records_to_table("customers", schema_name=names.schema, records=CUSTOMERS)
    finally:
        await db.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=count, replication_factor=1)
                                   for topic, count in names.partitions.items()])
    finally:
        await admin.close()


async def wait_for_capture(servers: Servers, names: Names, pump: subprocess.Popen[bytes], timeout: float) -> None:
    """Waits until the pump's CDC source created its replication slot: changes committed before that are not
    in the slot (the source's ``snapshot = true`` would read them; this example does not need it)."""
    deadline = time.monotonic() + timeout
    db = await asyncpg.connect(servers.postgres_dsn)
    try:
        while not await db.fetchval("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", names.slot):
            if pump.poll() is not None:
                raise SystemExit(f"run.py: the pump exited with code {pump.returncode} before capturing changes")
            if time.monotonic() > deadline:
                raise SystemExit(f"run.py: the pump created no replication slot {names.slot!r} in {timeout:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        await db.close()


async def insert_orders(servers: Servers, names: Names, orders: int, transaction: int, bad_every: int) -> set[int]:
    """Inserts the orders; returns the ids of the bad ones."""
    bad: set[int] = set()
    db = await asyncpg.connect(servers.postgres_dsn)
    try:
        for start in range(1, orders + 1, transaction):
            rows = []
            for order in range(start, min(start + transaction, orders + 1)):
                quantity = 0 if bad_every and order % bad_every == 0 else 1 + order % 5
                if quantity == 0:
                    bad.add(order)
                rows.append((order, CUSTOMERS[order % len(CUSTOMERS)][0], f"item-{order % 97}", quantity,
                             quantity * (100 + order % 900)))
            async with db.transaction():
                await db.executemany(f"INSERT INTO {names.schema}.orders (id, customer_id, item, quantity, "
                                     "amount_cents) VALUES ($1, $2, $3, $4, $5)", rows)
            await asyncio.sleep(0.01)  # a stream of transactions, not one bulk load
    finally:
        await db.close()
    return bad


class Observer:
    """Counts what each side holds now."""

    def __init__(self, servers: Servers, names: Names) -> None:
        self.servers, self.names = servers, names
        self.es = AsyncElasticsearch(servers.elasticsearch)
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongodb)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=servers.kafka)

    async def start(self) -> None:
        await self.consumer.start()

    async def close(self) -> None:
        await self.consumer.stop()
        await self.es.close()
        await self.mongo.close()

    async def topic_size(self, topic: str) -> int:
        # The run created its topics: their partitions are known, no metadata lookup needed.
        partitions = [TopicPartition(topic, p) for p in range(self.names.partitions[topic])]
        ends = await self.consumer.end_offsets(partitions)
        return sum(ends.values())

    async def counts(self) -> Counts:
        db = await asyncpg.connect(self.servers.postgres_dsn)
        try:
            rows = await db.fetchval(f"SELECT count(*) FROM {self.names.schema}.orders")
        finally:
            await db.close()
        try:
            await self.es.indices.refresh(index=self.names.index)
            documents = (await self.es.count(index=self.names.index))["count"]
        except NotFoundError:
            documents = 0
        history = await self.mongo[self.names.database]["order_history"].count_documents({})
        return Counts(rows, await self.topic_size(self.names.topic), await self.topic_size(self.names.dead_topic),
                      documents, history)

    async def rejected(self) -> dict[int, str]:
        """Order id -> reason, from the dead-letter topic."""
        consumer = AIOKafkaConsumer(self.names.dead_topic, bootstrap_servers=self.servers.kafka,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        found: dict[int, str] = {}
        try:
            expected = await self.topic_size(self.names.dead_topic)
            seen = 0
            while seen < expected:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in records:
                        seen += 1
                        change = orjson.loads(record.value or b"null")
                        headers = {key: value.decode() for key, value in record.headers}
                        found[int(change["row"]["id"])] = headers.get("error", "")
        finally:
            await consumer.stop()
        return found

    async def customers_in_history(self) -> dict[int, str]:
        cursor = self.mongo[self.names.database]["order_history"].find({}, {"id": 1, "customer.name": 1})
        return {int(doc["id"]): doc["customer"]["name"] async for doc in cursor}

    async def customers_in_search(self, ids: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(0, len(ids), 1000):
            reply = await self.es.mget(index=self.names.index, ids=[str(i) for i in ids[start:start + 1000]])
            for doc in reply["docs"]:
                if doc.get("found"):
                    found[int(doc["_id"])] = doc["_source"]["customer"]["name"]
        return found


async def remove(servers: Servers, names: Names) -> None:
    """Drops what the run created; the replication slot above all (a forgotten slot holds WAL for ever)."""
    db = await asyncpg.connect(servers.postgres_dsn)
    try:
        await db.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = $1 AND NOT active", names.slot)
        await db.execute(f"DROP PUBLICATION IF EXISTS {names.slot}")
        await db.execute(f"DROP SCHEMA IF EXISTS {names.schema} CASCADE")
    finally:
        await db.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.kafka)
    await admin.start()
    try:
        await admin.delete_topics([names.topic, names.dead_topic])
    finally:
        await admin.close()
    async with AsyncElasticsearch(servers.elasticsearch) as es:
        await es.options(ignore_status=404).indices.delete(index=names.index)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongodb)
    await mongo.drop_database(names.database)
    await mongo.close()


def start_pump(servers: Servers, names: Names, log: Path) -> subprocess.Popen[bytes]:
    bspump = shutil.which("bspump", path=str(Path(sys.executable).parent)) or shutil.which("bspump")
    if bspump is None:
        raise SystemExit("run.py: the bspump command is not installed next to this Python "
                         "(pip install bspump-core bspump-postgresql bspump-kafka bspump-elasticsearch bspump-mongodb)")
    print(f"pump: bspump run {(HERE / 'pipelines.conf').relative_to(ROOT)} (log: {log})")
    with log.open("wb") as out:
        return subprocess.Popen([bspump, "run", str(HERE / "pipelines.conf")], stdout=out, stderr=subprocess.STDOUT,
                                env=pump_environment(servers, names), start_new_session=True)


def stop_pump(pump: subprocess.Popen[bytes]) -> int:
    if pump.poll() is None:
        pump.send_signal(signal.SIGTERM)
        try:
            return pump.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pump.kill()
    return pump.wait()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    servers, names = Servers(), Names()
    print(f"run {names.run}: {args.orders} orders, every {args.bad_every}th bad")
    await create(servers, names)
    log = Path(args.log or HERE / f"pump-{names.run}.log")
    pump = start_pump(servers, names, log)
    observer = Observer(servers, names)
    await observer.start()
    started = time.monotonic()
    try:
        await wait_for_capture(servers, names, pump, 60.0)
        print(f"pump: capturing changes after {time.monotonic() - started:.1f} s; inserting orders")
        loading = asyncio.create_task(insert_orders(servers, names, args.orders, args.transaction, args.bad_every))
        deadline = started + args.timeout
        counts = Counts()
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            counts = await observer.counts()
            print(f"{time.monotonic() - started:5.0f}s  {counts.line()}", flush=True)
            if pump.poll() is not None:
                break
            if loading.done():
                good = args.orders - len(loading.result())
                if (counts.kafka, counts.rejected, counts.elasticsearch, counts.mongodb) == \
                        (good, len(loading.result()), good, good):
                    break
        bad = await loading
        exit_code = stop_pump(pump)
        counts = await observer.counts()
        good_ids = sorted(set(range(1, args.orders + 1)) - bad)
        rejected = await observer.rejected()
        expected_names = {order: CUSTOMERS[order % len(CUSTOMERS)][1] for order in good_ids}
        checks = {
            "pump stopped cleanly (exit code 0)": exit_code == 0,
            f"postgresql holds all {args.orders} orders": counts.postgresql == args.orders,
            f"kafka holds the {len(good_ids)} good orders": counts.kafka == len(good_ids),
            f"the dead-letter topic holds the {len(bad)} bad orders, each with its reason":
                set(rejected) == bad and all("is not positive" in reason for reason in rejected.values()),
            f"elasticsearch holds the {len(good_ids)} good orders with their customer":
                counts.elasticsearch == len(good_ids)
                and await observer.customers_in_search(good_ids) == expected_names,
            f"mongodb holds the {len(good_ids)} good orders with their customer":
                counts.mongodb == len(good_ids) and await observer.customers_in_history() == expected_names,
        }
    finally:
        stop_pump(pump)
        await observer.close()
        if not args.keep:
            await remove(servers, names)
    print(f"\nfinal: {counts.line()}  ({time.monotonic() - started:.1f} s)")
    for check, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    if not all(checks.values()):
        print(f"pump log: {log}", file=sys.stderr)
    elif not args.log:
        log.unlink()
    return {"run": names.run, "orders": args.orders, "postgresql": counts.postgresql, "kafka": counts.kafka,
            "rejected": counts.rejected, "elasticsearch": counts.elasticsearch, "mongodb": counts.mongodb,
            "ok": all(checks.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000, help="orders to insert (default 5000)")
    parser.add_argument("--transaction", type=int, default=50, help="orders per transaction (default 50)")
    parser.add_argument("--bad-every", type=int, default=97, help="every Nth order is invalid (0: none)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every side to agree")
    parser.add_argument("--keep", action="store_true", help="keep the schema, topics, index and database")
    parser.add_argument("--log", help="write the pump's log there (default: beside this file, kept on failure)")
    args = parser.parse_args()
    start_servers()
    result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
