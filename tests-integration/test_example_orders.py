"""The orders example (examples/orders/) runs end to end on the real servers and every side agrees:
PostgreSQL rows, Kafka messages, dead letters, Elasticsearch and MongoDB documents (with their customer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "examples" / "orders" / "run.py"

pytestmark = [pytest.mark.postgresql, pytest.mark.kafka, pytest.mark.elasticsearch, pytest.mark.mongodb]


def test_orders_example_ends_with_every_side_agreeing(postgres_dsn: str, kafka_bootstrap: str,
                                                      elasticsearch_url: str, mongodb_uri: str,
                                                      tmp_path: Path) -> None:
    env = {**os.environ, "BSPUMP_SERVERS_EXTERNAL": "1",  # the fixtures above checked that they answer
           "BSPUMP_TEST_POSTGRES_DSN": postgres_dsn, "BSPUMP_TEST_KAFKA": kafka_bootstrap,
           "BSPUMP_TEST_ELASTICSEARCH_URL": elasticsearch_url, "BSPUMP_TEST_MONGODB_URI": mongodb_uri}
    log = tmp_path / "pump.log"
    result = subprocess.run([sys.executable, str(RUN), "--orders", "3000", "--bad-every", "50", "--timeout", "120",
                             "--log", str(log)], env=env, capture_output=True, text=True, timeout=240, check=False)
    pump_log = log.read_text() if log.exists() else "(no pump log)"
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}\npump log:\n{pump_log[-3000:]}"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert (summary["postgresql"], summary["kafka"], summary["rejected"]) == (3000, 2940, 60)
    assert (summary["elasticsearch"], summary["mongodb"]) == (2940, 2940)
    assert "FAIL" not in result.stdout
    assert "Traceback" not in pump_log and "ERROR" not in pump_log, pump_log[-3000:]
