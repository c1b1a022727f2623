"""The lease kept between statements: one per access level, given back when idle."""

from __future__ import annotations

import asyncio

import pytest

from heliosdb.engine import Access
from heliosdb.services.documents import parking
from heliosdb.services.documents.parking import Parking


class Lease:
    def __init__(self) -> None:
        self.returned = 0

    async def __aexit__(self, *exc_info: object) -> None:
        self.returned += 1


async def test_keep_and_take_one_per_access_level() -> None:
    kept = Parking()
    first, second, other = Lease(), Lease(), Lease()
    assert kept.keep(Access.READ_WRITE, first)
    assert not kept.keep(Access.READ_WRITE, second)  # the caller gives this one back
    assert kept.keep(Access.READ_ONLY, other)
    assert kept.take(Access.READ_WRITE) is first
    assert kept.take(Access.READ_WRITE) is None
    await kept.close()
    assert (first.returned, second.returned, other.returned) == (0, 0, 1)
    assert kept.take(Access.READ_ONLY) is None


async def test_idle_lease_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parking, "IDLE_SECONDS", 0.05)
    kept = Parking()
    lease = Lease()
    kept.keep(Access.READ_WRITE, lease)
    await asyncio.sleep(0.2)
    assert lease.returned == 1
    assert kept.take(Access.READ_WRITE) is None
    await kept.close()
