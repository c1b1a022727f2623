"""The hub's rule for reading the event table after a NOTIFY (services/changes/hub.py):
events this node's own leader is writing come from memory, whichever arrives first."""

from __future__ import annotations

from typing import cast

from heliosdb.engine import Engine
from heliosdb.services.changes.events import ChangeEvent, encode_notice
from heliosdb.services.changes.hub import Hub


def _event(position: int) -> ChangeEvent:
    return ChangeEvent(position, "public", "t", "INSERT", b"{}")


def _hub() -> Hub:
    hub = Hub(cast(Engine, None), "slot")  # the engine is only used by run()
    hub._need_read = False
    return hub


def test_a_notify_for_what_the_local_leader_is_writing_needs_no_read() -> None:
    hub = _hub()
    hub.expect_written(3)
    hub._notified(None, 0, "helios_changes", "3")  # the NOTIFY before the hand-over
    assert not hub._need_read
    hub.dispatch_written([_event(1), _event(2), _event(3)])
    assert not hub._need_read and hub._queued == 3


def test_a_notify_past_what_the_local_leader_writes_is_read() -> None:
    hub = _hub()
    hub.expect_written(3)
    hub._notified(None, 0, "helios_changes", "4")  # another node's leader wrote 4
    assert hub._need_read


def test_when_the_local_leader_stops_the_table_is_read_and_notifies_count_again() -> None:
    hub = _hub()
    hub.expect_written(3)  # the write may have committed without a hand-over
    hub.leader_stopped()
    assert hub._need_read
    hub._need_read = False
    hub._notified(None, 0, "helios_changes", "3")
    assert hub._need_read


def test_events_in_a_notify_that_follow_on_are_queued_without_a_read() -> None:
    hub = _hub()
    hub.delivered = 2
    hub._notified(None, 0, "helios_changes", encode_notice(4, [_event(3), _event(4)]))
    assert not hub._need_read and hub._queued == 4
    hub._notified(None, 0, "helios_changes", encode_notice(7, [_event(6), _event(7)]))
    assert hub._need_read  # 5 is missing: read the table, in order


def test_a_notify_with_events_for_what_is_queued_is_skipped_and_others_still_parse() -> None:
    # _notified reads only the first line of a NOTIFY the local leader wrote; any other
    # (with events, or with a head that is not a plain position) is parsed in full.
    hub = _hub()
    hub.dispatch_written([_event(1), _event(2)])
    hub._notified(None, 0, "helios_changes", encode_notice(2, [_event(1), _event(2)]))
    assert not hub._need_read and hub._queued == 2 and len(hub._inbox) == 2
    hub._notified(None, 0, "helios_changes", encode_notice(3, [_event(3)]))
    assert [e.position for e in hub._inbox] == [1, 2, 3] and not hub._need_read
    hub._notified(None, 0, "helios_changes", "\u0663")  # a digit, but not a position
    assert not hub._need_read
    hub._notified(None, 0, "helios_changes", "+9")
    assert hub._need_read  # what parse_notice makes of it: position 9, no events
