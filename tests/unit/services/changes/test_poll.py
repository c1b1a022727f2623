"""The capture leader's adaptive WAL poll (services/changes/capture.py)."""

from __future__ import annotations

from heliosdb.services.changes.capture import poll_pause


def test_active_engine_polls_at_the_interval() -> None:
    assert poll_pause(0.005, 0.0) == 0.005
    assert poll_pause(0.005, 0.03) == 0.005


def test_quiet_engine_backs_off_with_the_quiet_time() -> None:
    assert poll_pause(0.005, 0.2) == 0.2 * 0.1
    assert poll_pause(0.005, 0.5) > poll_pause(0.005, 0.2)


def test_idle_engine_polls_at_most_every_100_ms() -> None:
    assert poll_pause(0.005, 5.0) == 0.1
    assert poll_pause(0.005, 1e9) == 0.1  # never polled since start


def test_a_longer_interval_is_kept() -> None:
    assert poll_pause(0.5, 0.0) == 0.5
    assert poll_pause(0.5, 100.0) == 0.5
