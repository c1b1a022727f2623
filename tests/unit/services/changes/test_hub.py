"""The hub's rule for reading the event table after a NOTIFY (services/changes/hub.py):
events this node's own leader is writing come from memory, whichever arrives first."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from heliosdb.engine import Engine
from heliosdb.errors import ErrorCode, HeliosError
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
    hub.on_dispatch = lambda event: None  # an observer: events go through the inbox
    hub.dispatch_written([_event(1), _event(2)])
    hub._notified(None, 0, "helios_changes", encode_notice(2, [_event(1), _event(2)]))
    assert not hub._need_read and hub._queued == 2 and len(hub._inbox) == 2
    hub._notified(None, 0, "helios_changes", encode_notice(3, [_event(3)]))
    assert [e.position for e in hub._inbox] == [1, 2, 3] and not hub._need_read
    hub._notified(None, 0, "helios_changes", "\u0663")  # a digit, but not a position
    assert not hub._need_read
    hub._notified(None, 0, "helios_changes", "+9")
    assert hub._need_read  # what parse_notice makes of it: position 9, no events


def test_a_hand_over_with_nothing_to_dispatch_to_moves_on_without_queueing() -> None:
    hub = _hub()
    hub.dispatch_written([_event(1), _event(2)])
    assert hub.delivered == 2 and not hub._inbox and not hub._wake.is_set()
    hub._notified(None, 0, "helios_changes", "2")  # its NOTIFY: nothing to read
    assert not hub._need_read
    hub.dispatch_written([_event(4)])  # 3 is missing: the table is read, in order
    assert hub._need_read and hub.delivered == 2
    observed: list[int] = []
    hub.on_dispatch = lambda event: observed.append(event.position)
    hub.dispatch_written([_event(3)])
    assert [e.position for e in hub._inbox] == [3] and hub._wake.is_set()


class _Listener:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def add_listener(self, channel: str, callback: object) -> None:
        self.calls.append("listen " + channel)

    async def remove_listener(self, channel: str, callback: object) -> None:
        self.calls.append("unlisten " + channel)


async def test_the_hub_listens_while_something_takes_events_unless_its_own_leader_leads() -> None:
    hub = _hub()
    conn = _Listener()
    await hub._listen(conn)  # type: ignore[arg-type]
    assert conn.calls == [] and not hub._need_read  # nothing takes events: no wakeups
    hub.on_dispatch = lambda event: None  # (as a subscription does)
    await hub._listen(conn)  # type: ignore[arg-type]
    assert conn.calls == ["listen helios_changes"] and hub._need_read
    hub._need_read = False
    await hub._listen(conn)  # type: ignore[arg-type]
    assert conn.calls == ["listen helios_changes"] and not hub._need_read
    hub.leader_started()  # every event now comes from this node's leader
    await hub._listen(conn)  # type: ignore[arg-type]
    assert conn.calls[-1] == "unlisten helios_changes" and hub._need_read
    hub._need_read = False
    hub.leader_stopped()  # LISTEN again, then read what another leader may have written
    await hub._listen(conn)  # type: ignore[arg-type]
    assert conn.calls[-1] == "listen helios_changes" and hub._need_read
    hub._need_read = False
    hub.on_dispatch = None  # the last taker gone: stop listening, nothing to read
    await hub._listen(conn)  # type: ignore[arg-type]
    assert conn.calls[-1] == "unlisten helios_changes"
    assert not hub._wants_events() and not hub._dispatches()


async def test_a_subscribe_waits_until_the_hub_listens_and_knows_where_the_log_ends() -> None:
    hub = _hub()
    conn = _Listener()
    waiting = asyncio.ensure_future(hub.ready())
    await asyncio.sleep(0)
    assert hub._wake.is_set() and hub._wants_events() and not hub._dispatches()
    await hub._listen(conn)  # type: ignore[arg-type]
    assert conn.calls == ["listen helios_changes"] and hub._need_read
    assert not waiting.done()
    hub._release()  # (the hub's task does so after its read)
    await waiting
    assert not hub._waiters
    await hub.ready()  # listening: at once
    with pytest.raises(HeliosError) as caught:
        await _hub().ready(timeout=0.01)  # no hub task: the subscribe fails, never hangs
    assert caught.value.code is ErrorCode.UNAVAILABLE
