"""``$bucketAuto``'s boundary rules: the granularity rounders as MongoDB rounds, and how
the sorted values are cut into buckets."""

from __future__ import annotations

from typing import Any

import pytest
from bson.decimal128 import Decimal128

from heliosdb.errors import HeliosError
from heliosdb.services.documents import buckets
from heliosdb.services.documents.pipeline import Grouper, Held, Limits


@pytest.mark.parametrize(
    ("granularity", "value", "up", "down"),
    [
        ("R5", 1, 1.6, 0.63),  # a value on the series rounds to its neighbours
        ("R5", 20, 25.0, 16.0),
        ("R5", 0.8, 1.0, 0.63),  # between a decade's last and the next one's first
        ("E6", 0.8, 1.0, 0.68),
        ("1-2-5", 7, 10.0, 5.0),
        ("E12", 100, 120.0, 82.0),
        ("R40", 330, 355.0, 315.0),  # MongoDB's R40 has no 335
        ("POWERSOF2", 1, 2, 0.5),
        ("POWERSOF2", 32, 64, 16),
        ("POWERSOF2", 33, 64, 32),
        ("POWERSOF2", 3.5, 4, 2),
        ("POWERSOF2", 0.3, 0.5, 0.25),
        ("R10", 0, 0, 0),  # zero is its own boundary
    ],
)
def test_rounders(granularity: str, value: Any, up: Any, down: Any) -> None:
    assert buckets.round_up(granularity, value) == pytest.approx(up)
    assert buckets.round_down(granularity, value) == pytest.approx(down)


def test_rounders_keep_mongodb_doubles() -> None:
    # the series times a power of ten as doubles: 1.6000000000000001, not 1.6
    assert buckets.round_up("R5", 1) == 16 * 0.1
    assert buckets.round_down("R5", 20) == 16.0


def test_rounders_of_decimals_stay_decimal() -> None:
    assert buckets.round_up("E6", Decimal128("1.3")) == Decimal128("1.5")
    assert buckets.round_down("POWERSOF2", Decimal128("5")) == Decimal128("4")


@pytest.mark.parametrize(("value", "code"), [("a", 40262), (-1, 40268), (float("nan"), 40263)])
def test_rounders_refuse(value: Any, code: int) -> None:
    with pytest.raises(HeliosError) as failure:
        buckets.round_up("R5", value)
    assert failure.value.details["location"] == code


def cut(values: list[Any], count: int, granularity: str | None = None) -> list[Any]:
    spec: dict[str, Any] = {"groupBy": "$v", "buckets": count}
    if granularity:
        spec["granularity"] = granularity
    rows = buckets.auto(
        [{"v": v} for v in values], spec, lambda s: Grouper(s, Held("$bucketAuto", Limits()))
    )
    return [(r["_id"]["min"], r["_id"]["max"], r["count"]) for r in rows]


def test_bucket_size_rounds_half_away_from_zero() -> None:
    # 5 / 2 = 2.5 rounds to 3 (C's round), not to 2 (Python's)
    assert cut([1, 2, 3, 4, 5], 2) == [(1, 4, 3), (4, 5, 2)]


def test_the_last_bucket_takes_the_rest() -> None:
    assert cut(list(range(10)), 3) == [(0, 3, 3), (3, 6, 3), (6, 9, 4)]


def test_equal_values_never_straddle_buckets() -> None:
    # two a bucket: the first takes 1 and 2, then the other 2s
    assert cut([1, 2, 2, 2, 2, 3], 3) == [(1, 3, 5), (3, 3, 1)]


def test_granularity_zero_max_takes_the_next_min_rounded_down() -> None:
    # the first bucket holds only zeros: its max is the next value rounded down
    assert cut([0, 0, 5, 7], 2, "R5") == [(0, 4.0, 2), (4.0, 10.0, 2)]
