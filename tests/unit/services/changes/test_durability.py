"""The streaming leader confirms a position only once the events written for it are
durable (services/changes/capture.py, _Durability)."""

from __future__ import annotations

from heliosdb.services.changes.capture import _Durability


def test_a_batch_is_confirmed_only_once_the_wal_is_flushed_past_the_next_write() -> None:
    durability = _Durability()
    durability.written(100)  # batch 1 ends at LSN 100 (its write's commit: unknown)
    assert durability.due(10_000) == 0  # no bound yet: its commit may not be flushed
    durability.bound(500)  # batch 2's write ran at WAL 500: batch 1's commit is before
    durability.written(200)
    assert durability.due(499) == 0
    assert durability.due(500) == 100
    assert durability.due(10_000) == 0  # batch 2 waits for a bound of its own
    durability.bound(900)
    assert durability.due(900) == 200
    assert not durability.pending()


def test_the_newest_flushed_batch_wins_and_batches_without_events_wait_their_turn() -> None:
    durability = _Durability()
    durability.written(100)
    durability.bound(300)
    durability.written(150)  # nothing to write: confirmed with the next bound
    durability.written(200)
    durability.bound(700)
    assert durability.pending()
    assert durability.due(800) == 200
    assert not durability.pending()


def test_a_bound_with_nothing_waiting_changes_nothing() -> None:
    durability = _Durability()
    durability.bound(300)
    assert not durability.pending()
    assert durability.due(1_000) == 0
