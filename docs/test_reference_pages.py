"""Every connector package has a reference page, and the page lists every key its classes declare.

The packages, their entry points and the classes those register are discovered, never listed here, so a
connector added to ``packages/`` is checked as soon as it exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import reference_pages

PACKAGES = reference_pages.packages()


@pytest.mark.parametrize("package", PACKAGES, ids=[p.distribution for p in PACKAGES])
def test_reference_page_lists_every_key(package: reference_pages.Package) -> None:
    problems = reference_pages.check_package(package)
    assert not problems, "\n".join(problems)


def test_every_connector_package_is_found() -> None:
    # Discovery itself must see the repository's packages: an empty list would pass every check above.
    names = {p.distribution for p in PACKAGES}
    assert {"bspump-core", "bspump-kafka"} <= names


PAGE = """\
Demo
====

``pip install bspump-demo``

{title}
{underline}

.. list-table::
   :header-rows: 1

   * - Key
     - Type
     - Default
     - Meaning
{rows}
"""


def _page(tmp_path: Path, title: str, keys: list[str]) -> Path:
    rows = "".join(f"   * - ``{key}``\n     - string\n     - (empty)\n     - what it is\n" for key in keys)
    page = tmp_path / "demo.rst"
    page.write_text(PAGE.format(title=title, underline="-" * len(title), rows=rows), encoding="utf-8")
    return page


def test_a_missing_key_is_named_with_its_class_and_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself, on a page written here: the message names the key, the class and the page."""
    import bspump.kafka

    package = next(p for p in PACKAGES if p.distribution == "bspump-kafka")
    declared = list(reference_pages.declared_keys(bspump.kafka.KafkaSink))
    page = _page(tmp_path, "KafkaSink", [k for k in declared if k != "linger_ms"] + ["no_such_key"])
    monkeypatch.setattr(reference_pages, "PAGES", tmp_path)
    monkeypatch.setattr(reference_pages, "ROOT", tmp_path)
    monkeypatch.setattr(reference_pages.Package, "page", property(lambda self: page))
    problems = reference_pages.check_package(package)
    assert "key 'linger_ms' of KafkaSink is missing from demo.rst (section KafkaSink)" in problems
    assert any("key 'no_such_key' is not a key of KafkaSink" in p for p in problems)
    assert "demo.rst: no section titled KafkaSource (a class bspump-kafka registers)" in problems


def test_a_connector_without_a_page_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = next(p for p in PACKAGES if p.distribution == "bspump-kafka")
    monkeypatch.setattr(reference_pages, "PAGES", tmp_path)
    monkeypatch.setattr(reference_pages, "ROOT", tmp_path)
    assert reference_pages.check_package(package) == [
        "bspump-kafka has no reference page: write kafka.rst (python docs/reference_pages.py bspump-kafka "
        "prints its tables)"]


def test_a_key_cell_must_be_a_literal(tmp_path: Path) -> None:
    page = _page(tmp_path, "KafkaSink", ["topic"])
    page.write_text(page.read_text(encoding="utf-8").replace("``topic``", "topic"), encoding="utf-8")
    section = reference_pages.page_sections(page)["KafkaSink"]
    assert section.keys == [] and section.problems == ["a row whose Key cell 'topic' is not written ``key``"]


def test_printed_tables_are_a_page_that_passes(tmp_path: Path) -> None:
    """What ``python docs/reference_pages.py`` prints for a package reads back with every key."""
    import io

    import bspump.kafka

    out = io.StringIO()
    assert reference_pages.print_tables("bspump-kafka", out) == 0
    page = tmp_path / "kafka.rst"
    page.write_text("Kafka\n=====\n\n" + out.getvalue(), encoding="utf-8")
    sections = reference_pages.page_sections(page)
    for cls in (bspump.kafka.KafkaConnection, bspump.kafka.KafkaSource, bspump.kafka.KafkaSink):
        assert sections[cls.__name__].keys == list(reference_pages.declared_keys(cls))
        assert sections[cls.__name__].problems == []


def test_a_class_section_may_split_its_keys_over_subsections(tmp_path: Path) -> None:
    page = _page(tmp_path, "KafkaSink", ["topic"])
    text = page.read_text(encoding="utf-8")
    table = text[text.index(".. list-table::"):]
    page.write_text(text + "\nProducer\n~~~~~~~~\n\n" + table.replace("``topic``", "``acks``"), encoding="utf-8")
    sections = reference_pages.page_sections(page, ["KafkaSink"])
    assert sections["KafkaSink"].keys == ["topic", "acks"]
    assert sections["Producer"].keys == []


@pytest.mark.parametrize(("default", "written", "disagrees"), [
    ("Seconds(0.5)", "``500ms``", False), ("Seconds(0.5)", "``0.5``", False), ("Seconds(0.5)", "``1s``", True),
    ("Int(5, min=0)", "``5``", False), ("Int(1048576)", "``1,048,576``", False), ("Int(5, min=0)", "``10``", True),
    ("Int(1048576)", "1 MiB", False), ("True", "``true``", False), ("True", "``no``", True),
    ("Choice('all', ('all', '1', '0'))", "``all``", False), ("Choice('all', ('all', '1', '0'))", "``1``", True),
    ("Choice('all', ('all', '1', '0'))", "every replica", False), ("'localhost:9092'", "anything", False),
])
def test_a_default_the_page_states_must_be_the_code_s(default: str, written: str, disagrees: bool) -> None:
    from bspump.config import Choice, Int, Seconds  # noqa: F401 (used by eval)

    assert reference_pages.default_disagrees(eval(default), written) is disagrees


def test_a_stale_default_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bspump.kafka

    package = next(p for p in PACKAGES if p.distribution == "bspump-kafka")
    out = __import__("io").StringIO()
    reference_pages.print_tables("bspump-kafka", out)
    text = "Kafka\n=====\n\n" + out.getvalue()
    linger = text.index("``linger_ms``")
    text = text[:linger] + text[linger:].replace("``5``", "``50``", 1)
    page = tmp_path / "kafka.rst"
    page.write_text(text, encoding="utf-8")
    monkeypatch.setattr(reference_pages, "ROOT", tmp_path)
    monkeypatch.setattr(reference_pages.Package, "page", property(lambda self: page))
    assert bspump.kafka.KafkaSink.ConfigDefaults["linger_ms"] == 5
    assert reference_pages.check_package(package) == [
        "kafka.rst, section KafkaSink: the default of 'linger_ms' is 5 in the code but '50' on the page"]
