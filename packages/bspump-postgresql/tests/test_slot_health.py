"""The slot health reading: gauges and the warnings before and after max_slot_wal_keep_size."""

from __future__ import annotations

from bspump.postgresql.slot import SlotHealth

MB = 1024 * 1024


def health(status: str = "reserved", retained: int = 10 * MB, keep: int = -1, safe: int | None = None) -> SlotHealth:
    return SlotHealth(status, retained, safe, keep, 0)


def test_no_warning_while_reserved_and_unlimited() -> None:
    assert health().warning("s", 0.8) is None
    assert health(keep=100 * MB, retained=79 * MB).warning("s", 0.8) is None


def test_warns_past_the_fraction_of_max_slot_wal_keep_size() -> None:
    message = health(keep=100 * MB, retained=85 * MB, safe=15 * MB).warning("orders", 0.8)
    assert message is not None
    assert "'orders'" in message and "85 MB" in message and "85%" in message and "100 MB" in message


def test_unreserved_and_lost_slots_are_reported() -> None:
    assert "unreserved" in (health("unreserved", keep=100 * MB, retained=120 * MB).warning("s", 0.8) or "")
    assert "lost" in (health("lost").warning("s", 0.8) or "")


def test_gauges() -> None:
    assert health("extended", retained=5 * MB, keep=100 * MB, safe=95 * MB).gauges() == {
        "slot_retained_bytes": 5.0 * MB, "slot_wal_status": 1.0, "slot_safe_wal_bytes": 95.0 * MB}
    assert health().gauges()["slot_safe_wal_bytes"] == -1.0
