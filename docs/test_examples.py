"""Runs the Python examples of the documentation, in order, one namespace per page (like doctest).

An example that imports a connector not in this repository yet is skipped with that reason; the
others must run as written.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).parent
BLOCK = re.compile(r"^\.\. code-block:: python\n\n((?:   .*\n|\n)+)", re.MULTILINE)


def python_blocks(page: Path) -> list[str]:
    blocks = []
    for match in BLOCK.finditer(page.read_text(encoding="utf-8")):
        lines = [line[3:] for line in match.group(1).splitlines()]
        blocks.append("\n".join(lines).strip() + "\n")
    return blocks


def missing_connector(code: str) -> str | None:
    for name in re.findall(r"\b(bspump\.\w+)", code):
        if name.split(".")[1] in {"kafka", "postgresql", "mongodb", "elasticsearch", "mqtt"}:
            try:
                found = importlib.util.find_spec(name) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                return name
    return None


class FakeClient:
    """Stands in for the undefined ``create_client`` of the custom-connection example."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.closed = host, port, False

    async def close(self) -> None:
        self.closed = True


async def create_client(host: str, port: int) -> FakeClient:
    return FakeClient(host, port)


PAGES = sorted(DOCS.rglob("*.rst"))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"create_client": create_client}
    blocks = python_blocks(page)
    skipped = []
    for number, code in enumerate(blocks, 1):
        missing = missing_connector(code)
        if missing:
            skipped.append(f"example {number} needs {missing}")
            continue
        exec(compile(code, f"{page.name} example {number}", "exec"), namespace)
    if page.name == "connections.rst":
        # The custom connection of the page really connects and disconnects with the page's code.
        connection_cls = namespace["MyConnection"]
        import bspump

        app = bspump.BSPumpApplication(load_plugins=False)
        connection = connection_cls(app, "Mine", config={"host": "db.example", "port": "5432"})

        async def cycle() -> None:
            await connection.connect()
            assert connection.client.host == "db.example" and connection.client.port == 5432
            await connection.disconnect()
            assert connection.client.closed

        asyncio.run(cycle())
    if skipped and len(skipped) == len(blocks):
        pytest.skip("; ".join(skipped))
