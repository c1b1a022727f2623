"""How many find streams may hold an engine connection: a bound per engine pool."""

from __future__ import annotations

from heliosdb.engine import Access
from heliosdb.services.documents.streaming import Slots


def test_each_pool_has_its_own_bound() -> None:
    slots = Slots(2)
    assert [slots.take(Access.READ_WRITE) for _ in range(3)] == [True, True, False]
    # read-only keys' streams take connections of the read-only pool
    assert slots.take(Access.READ_ONLY)


def test_a_slot_given_back_can_be_taken_again() -> None:
    slots = Slots(1)
    assert slots.take(Access.READ_WRITE)
    assert not slots.take(Access.READ_WRITE)
    slots.give(Access.READ_WRITE)
    assert slots.take(Access.READ_WRITE)


def test_a_bound_of_zero_holds_no_connection() -> None:
    assert not Slots(0).take(Access.READ_WRITE)
