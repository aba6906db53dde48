"""Configured secret values never appear in output: log lines (any library's, tracebacks included),
``/metrics``, and everything a failing run prints."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import make_app, run_app, write_conf

import bspump

SECRET = "hunter2-SECRET"


class RejectingConnection(bspump.Connection):
    """A server that rejects the login and quotes the password in its error, as some clients do."""

    async def connect(self) -> None:
        raise ConnectionError(f"login rejected for user 'u' with password '{self.Config.get('password')}'")


async def test_a_connect_error_quoting_the_password_is_masked_in_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = write_conf(tmp_path, f"[connection:DB]\npassword = {SECRET}\nmax_connect_attempts = 2\n"
                                "reconnect_initial = 10ms\n")
    app = make_app(conf)
    app.get_service("bspump.PumpService").add_connection(RejectingConnection(app, "DB"))
    caplog.set_level(logging.DEBUG)
    assert await run_app(app) == 1
    assert "login rejected for user 'u' with password '***'" in caplog.text
    assert SECRET not in caplog.text


async def test_secrets_given_in_code_and_other_libraries_records_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    class Chatty(bspump.Connection):
        async def connect(self) -> None:
            try:
                raise RuntimeError(f"handshake failed for token {SECRET}")
            except RuntimeError:
                logging.getLogger("some.client.library").exception("client error")
            logging.getLogger("some.client.library").warning("retrying with %s", SECRET)

    app.get_service("bspump.PumpService").add_connection(Chatty(app, "API", config={"api_token": SECRET}))
    p = bspump.Pipeline(app, "P")
    p.build(bspump.MemorySource(app, p, events=[1]), bspump.MemorySink(app, p, connection="API"))
    app.get_service("bspump.PumpService").add_pipeline(p)
    caplog.set_level(logging.DEBUG)
    assert await run_app(app) == 0
    assert "handshake failed for token ***" in caplog.text and "retrying with ***" in caplog.text
    assert SECRET not in caplog.text


async def test_masking_ends_with_the_run(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    app.get_service("bspump.PumpService").add_connection(RejectingConnection(
        app, "DB", config={"password": SECRET, "max_connect_attempts": 1}))
    assert await run_app(app) == 1
    handlers: list[Any] = logging.getLogger().handlers
    assert all(not handler.filters for handler in handlers)


def test_no_output_of_a_failing_run_contains_the_secret(tmp_path: Path) -> None:
    """The acceptance test of issue 9: grep everything a run prints whose connection fails with the secret in
    its error message (debug logging, so tracebacks too)."""
    (tmp_path / "rejecting.py").write_text(textwrap.dedent('''
        import bspump

        class RejectingConnection(bspump.Connection):
            ConfigDefaults = {"user": "u", "password": "", "dsn": ""}

            async def connect(self):
                raise ConnectionError(
                    f"login rejected for {self.Config.get('dsn')} with password '{self.Config.get('password')}'")

        class UsingSink(bspump.AsyncSink):
            async def write(self, batch):
                pass

        class OneEvent(bspump.Source):
            async def main(self):
                await self.emit([{"n": 1}])  # waits: the pipeline pauses until the connection is ready
    '''))
    conf = write_conf(tmp_path, textwrap.dedent(f"""\
        [web]
        listen = 127.0.0.1:0

        [connection:DB]
        type = rejecting:RejectingConnection
        password = ${{DB_PASSWORD}}
        dsn = postgresql://u:{SECRET}-in-dsn@db.example/app
        max_connect_attempts = 3
        reconnect_initial = 10ms

        [pipeline:P:In]
        type = rejecting:OneEvent

        [pipeline:P:Out]
        type = rejecting:UsingSink
        connection = DB
    """))
    env = {"PATH": "/usr/bin:/bin", "DB_PASSWORD": SECRET, "BSPUMP_PLUGINS": "none"}
    for command in (["check", str(conf)], ["run", "--no-progress", str(conf)]):
        result = subprocess.run([sys.executable, "-m", "bspump.cli", "--log-level", "DEBUG", *command],
                                capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
        output = result.stdout + result.stderr
        assert SECRET not in output, f"bspump {command[0]} printed the secret:\n{output}"
    assert "giving up after 3 attempts" in output and "with password '***'" in output
