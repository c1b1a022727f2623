"""Leases kept between statements: up to MAX_KEPT per access level, the last kept taken
first, each given back when idle."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from heliosdb.engine import Access
from heliosdb.services.documents import parking
from heliosdb.services.documents.parking import Parking


class Lease:
    def __init__(self) -> None:
        self.returned = 0

    async def __aexit__(self, *exc_info: object) -> None:
        self.returned += 1


async def test_keep_and_take_per_access_level() -> None:
    kept = Parking()
    leases = [Lease() for _ in range(parking.MAX_KEPT + 1)]
    other = Lease()
    for lease in leases[:-1]:
        assert kept.keep(Access.READ_WRITE, lease)
    assert not kept.keep(Access.READ_WRITE, leases[-1])  # the caller gives this one back
    assert kept.keep(Access.READ_ONLY, other)
    assert kept.take(Access.READ_WRITE) is leases[-2]  # the last kept first
    assert kept.take(Access.READ_WRITE) is leases[-3]
    await kept.close()
    assert [lease.returned for lease in leases] == [1] * (parking.MAX_KEPT - 2) + [0, 0, 0]
    assert other.returned == 1
    assert kept.take(Access.READ_ONLY) is None
    assert kept.take(Access.READ_WRITE) is None


async def test_idle_lease_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parking, "IDLE_SECONDS", 0.05)
    kept = Parking()
    lease = Lease()
    kept.keep(Access.READ_WRITE, lease)
    await asyncio.sleep(0.2)
    assert lease.returned == 1
    assert kept.take(Access.READ_WRITE) is None
    await kept.close()


async def test_only_the_idle_ones_go_back(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(parking, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    kept = Parking()
    old, fresh = Lease(), Lease()
    kept.keep(Access.READ_WRITE, old)
    clock[0] += parking.IDLE_SECONDS * 0.6
    kept.keep(Access.READ_WRITE, fresh)
    clock[0] += parking.IDLE_SECONDS * 0.6  # old is idle past IDLE_SECONDS, fresh is not
    kept._sweep()
    await asyncio.sleep(0)  # the give-back task runs
    assert (old.returned, fresh.returned) == (1, 0)
    assert kept.take(Access.READ_WRITE) is fresh
    assert kept.take(Access.READ_WRITE) is None
    await kept.close()
