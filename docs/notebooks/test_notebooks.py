"""Executes the notebooks of this folder in a real kernel (nbclient + ipykernel), as a user runs them.

Cells tagged ``kafka`` need a broker at ``BSPUMP_TEST_KAFKA`` (default 127.0.0.1:9092): without one, the
notebook runs without them and the Kafka test is skipped, saying so. Run by ``nox -s notebooks``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

HERE = Path(__file__).parent
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))
KERNEL = "bspump-notebook-test"
SERVER_TAGS = {"kafka": ("BSPUMP_TEST_KAFKA", "127.0.0.1:9092")}


def answers(address: str) -> bool:
    host, _, port = address.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this Python (the session's venv), ahead of any kernel the user has installed."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bspump tests", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("BSPUMP_CONFIG", raising=False)
    return KERNEL


def execute(path: Path, kernel: str, folder: Path, without: set[str]) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    notebook.cells = [cell for cell in notebook.cells if not without & set(cell.get("metadata", {}).get("tags", []))]
    client = NotebookClient(notebook, kernel_name=kernel, timeout=120, resources={"metadata": {"path": str(folder)}})
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(str(output.get("text", "")) + json.dumps(output.get("data", {}))
                     for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", []))


def server_tags(path: Path) -> set[str]:
    notebook = nbformat.read(path, as_version=4)
    return {tag for cell in notebook.cells for tag in cell.get("metadata", {}).get("tags", []) if tag in SERVER_TAGS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_without_servers(path: Path, kernel: str, tmp_path: Path) -> None:
    """Every cell that needs no server runs, in order, without an error (nbclient raises on one)."""
    notebook = execute(path, kernel, tmp_path, without=set(SERVER_TAGS))
    if path.name == "quickstart.ipynb":
        assert "of 1000 orders enriched and kept" in outputs(notebook)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_with_servers(path: Path, kernel: str, tmp_path: Path) -> None:
    """The whole notebook, its server cells included, when every server it needs answers."""
    needed = server_tags(path)
    if not needed:
        pytest.skip(f"{path.name} needs no server")
    addresses = {tag: os.environ.get(*SERVER_TAGS[tag]) for tag in sorted(needed)}
    missing = [f"{tag} at {address} ({SERVER_TAGS[tag][0]})" for tag, address in addresses.items()
               if not answers(address)]
    if missing:
        pytest.skip(f"{path.name}: no server answers for {', '.join(missing)}")
    notebook = execute(path, kernel, tmp_path, without=set())
    if path.name == "quickstart.ipynb":
        assert "events through notebook-orders-" in outputs(notebook)
