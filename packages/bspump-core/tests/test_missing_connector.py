"""Importing a connector that is not installed names the distribution to install."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

from bspump._missing import KNOWN_CONNECTORS


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(KNOWN_CONNECTORS))
def test_missing_connector_names_its_distribution(name: str) -> None:
    distribution = KNOWN_CONNECTORS[name]
    if _installed(distribution):
        pytest.skip(f"{distribution} is installed here")
    with pytest.raises(ModuleNotFoundError) as info:
        importlib.import_module(f"bspump.{name}")
    assert f"pip install {distribution}" in str(info.value)
    assert info.value.name == f"bspump.{name}"


def test_import_bspump_mongodb_statement() -> None:
    if _installed("bspump-mongodb"):
        pytest.skip("bspump-mongodb is installed here")
    with pytest.raises(ModuleNotFoundError, match="pip install bspump-mongodb"):
        import bspump.mongodb  # noqa: F401
    with pytest.raises(ModuleNotFoundError, match="pip install bspump-mongodb"):
        from bspump import mongodb  # noqa: F401


def test_other_missing_modules_keep_the_normal_error() -> None:
    with pytest.raises(ModuleNotFoundError) as info:
        importlib.import_module("bspump.no_such_thing")
    assert "pip install" not in str(info.value)
    if not _installed("bspump-kafka"):
        with pytest.raises(ModuleNotFoundError, match="pip install bspump-kafka"):
            importlib.import_module("bspump.kafka.deeper")
