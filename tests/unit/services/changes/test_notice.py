"""The capture NOTIFY's payload carries small batches whole (services/changes/events.py)."""

from __future__ import annotations

from heliosdb.services.changes.events import (
    NOTICE_BYTES,
    ChangeEvent,
    encode_notice,
    parse_notice,
)


def _event(position: int, table: str = "t", pad: str = "x") -> ChangeEvent:
    return ChangeEvent.build(
        position=position,
        schema="public",
        table=table,
        event_type="UPDATE",
        row={"id": position, "pad": pad},
        old_row={"id": position, "pad": "line\nbreak"},
        timestamp="2026-11-27T06:00:00+00:00",
        transaction_id=7,
    )


def test_events_round_trip_with_the_same_payload_bytes() -> None:
    events = [_event(5, table='odd\n"name'), _event(6, pad="é ✓")]
    newest, parsed = parse_notice(encode_notice(6, events))
    assert newest == 6 and parsed is not None
    assert [(e.position, e.schema, e.table, e.event_type, e.payload) for e in parsed] == [
        (e.position, e.schema, e.table, e.event_type, e.payload) for e in events
    ]


def test_too_big_for_a_notify_carries_only_the_position() -> None:
    events = [_event(i, pad="x" * 1000) for i in range(1, 10)]
    text = encode_notice(9, events)
    assert text == "9" and len(encode_notice(1, events[:1]).encode()) <= NOTICE_BYTES
    assert parse_notice(text) == (9, None)


def test_no_events_or_a_foreign_payload() -> None:
    assert parse_notice(encode_notice(3, None)) == (3, None)
    assert parse_notice(encode_notice(3, [])) == (3, None)
    assert parse_notice("not a position") == (-1, None)
