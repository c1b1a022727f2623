"""``$setWindowFields`` gap fillers and rates through pymongo (``$locf``,
``$linearFill``, ``$expMovingAvg``, ``$derivative``, ``$integral``), range windows in
time units over dates, and the ``$fill`` stage, as MongoDB answers them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection
from pymongo.database import Database

T0 = dt.datetime(2024, 1, 31, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def prices(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    rows = [
        {"s": "a", "t": 1, "p": None},
        {"s": "a", "t": 2, "p": 10},
        {"s": "a", "t": 3},
        {"s": "a", "t": 5, "p": 40},
        {"s": "a", "t": 6, "p": None},
        {"s": "b", "t": 1, "p": 5},
        {"s": "b", "t": 2, "p": "x"},
        {"s": "b", "t": 3, "p": 7},
    ]
    db.prices.insert_many(rows)
    return db.prices


def window(
    coll: Collection[dict[str, Any]], output: dict[str, Any], sort: str = "t", **stage: Any
) -> list[Any]:
    spec = {"partitionBy": "$s", "sortBy": {sort: 1}, "output": {"w": output}, **stage}
    rows = coll.aggregate([{"$setWindowFields": spec}])
    return [d["w"] for d in rows]


def test_locf_carries_the_last_value(prices: Collection[dict[str, Any]]) -> None:
    assert window(prices, {"$locf": "$p"}) == [None, 10, 10, 40, 40, 5, "x", 7]


def test_linear_fill_by_the_sort_values(prices: Collection[dict[str, Any]]) -> None:
    partition_a = {"$match": {"s": "a"}}
    rows = prices.aggregate(
        [
            partition_a,
            {"$setWindowFields": {"sortBy": {"t": 1}, "output": {"w": {"$linearFill": "$p"}}}},
        ]
    )
    # t 3 lies a third of the way from t 2 (10) to t 5 (40); none before the first or
    # after the last value
    assert [d["w"] for d in rows] == [None, 10, 20.0, 40, None]


def test_exp_moving_avg(prices: Collection[dict[str, Any]]) -> None:
    assert window(prices, {"$expMovingAvg": {"input": "$p", "alpha": 0.5}}) == [
        None,
        10.0,
        10.0,
        25.0,
        25.0,
        5.0,
        5.0,  # a string leaves the mean as it was
        6.0,
    ]
    by_n = window(prices, {"$expMovingAvg": {"input": "$p", "N": 3}})  # alpha 2 / (3 + 1)
    assert by_n[:4] == [None, 10.0, 10.0, 25.0]


@pytest.fixture(scope="module")
def meter(db: Database[dict[str, Any]]) -> Collection[dict[str, Any]]:
    readings = [(0, 0, 10), (1, 50, 20), (2, 110, 30), (26, 120, 0)]
    db.meter.insert_many(
        [{"s": "m", "at": T0 + h * HOUR, "km": km, "kw": kw} for h, km, kw in readings]
    )
    return db.meter


def test_derivative_per_hour(meter: Collection[dict[str, Any]]) -> None:
    speed = {
        "$derivative": {"input": "$km", "unit": "hour"},
        "window": {"documents": [-1, "current"]},
    }
    assert window(meter, speed, "at") == [None, 50.0, 60.0, 10 / 24]


def test_integral_per_hour(meter: Collection[dict[str, Any]]) -> None:
    energy = {
        "$integral": {"input": "$kw", "unit": "hour"},
        "window": {"documents": ["unbounded", "current"]},
    }
    assert window(meter, energy, "at") == [0.0, 15.0, 40.0, 400.0]
    whole = window(meter, {"$integral": {"input": "$kw", "unit": "hour"}}, "at")
    assert whole == [400.0] * 4


def test_range_window_in_days_and_months(meter: Collection[dict[str, Any]]) -> None:
    last_day = {"$sum": "$kw", "window": {"range": [-1, "current"], "unit": "day"}}
    assert window(meter, last_day, "at") == [10, 30, 60, 30]  # the last: hours 2 and 26
    month = {"$push": "$km", "window": {"range": ["current", 1], "unit": "month"}}
    # January 31 plus a month is February 29 (2024): every reading is within it
    assert window(meter, month, "at")[0] == [0, 50, 110, 120]


def test_range_window_over_many_documents(db: Database[dict[str, Any]]) -> None:
    db.many.insert_many([{"x": i // 2} for i in range(2000)])
    near = {"$count": {}, "window": {"range": [-2, 2]}}
    counts = window(db.many, near, "x", partitionBy=None)
    assert counts[:4] == [6, 6, 8, 8]
    assert counts[-1] == 6
    assert set(counts[4:-4]) == {10}
    # "current" is the document itself, not the ones with its value after it
    behind = {"$count": {}, "window": {"range": [-1, "current"]}}
    assert window(db.many, behind, "x", partitionBy=None)[:8] == [1, 2, 3, 4, 3, 4, 3, 4]


def test_fill_stage(prices: Collection[dict[str, Any]]) -> None:
    rows = prices.aggregate(
        [
            {
                "$fill": {
                    "partitionByFields": ["s"],
                    "sortBy": {"t": 1},
                    "output": {"p": {"method": "locf"}, "q": {"value": 0}},
                }
            },
            {"$project": {"_id": 0, "s": 1, "t": 1, "p": 1, "q": 1}},
        ]
    )
    assert [(d["s"], d["t"], d["p"], d["q"]) for d in rows] == [
        ("a", 1, None, 0),
        ("a", 2, 10, 0),
        ("a", 3, 10, 0),
        ("a", 5, 40, 0),
        ("a", 6, 40, 0),
        ("b", 1, 5, 0),
        ("b", 2, "x", 0),
        ("b", 3, 7, 0),
    ]
    linear = prices.aggregate(
        [
            {"$match": {"s": "a"}},
            {"$fill": {"sortBy": {"t": 1}, "output": {"p": {"method": "linear"}}}},
        ]
    )
    assert [d["p"] for d in linear] == [None, 10, 20.0, 40, None]
    valued = prices.aggregate([{"$fill": {"output": {"p": {"value": -1}}}}, {"$sort": {"_id": 1}}])
    assert [d["p"] for d in valued] == [-1, 10, -1, 40, -1, 5, "x", 7]


@pytest.mark.parametrize(
    "output",
    [
        {"$locf": "$p", "window": {"documents": [-1, 0]}},
        {"$expMovingAvg": {"input": "$p", "N": 2, "alpha": 0.5}},
        {"$expMovingAvg": {"input": "$p", "N": 0}},
        {"$expMovingAvg": {"input": "$p", "alpha": 1}},
        {"$derivative": {"input": "$p"}},
        {"$derivative": {"input": "$p", "unit": "day"}, "window": {"documents": [-1, 0]}},
        {"$integral": {"input": "$p", "unit": "fortnight"}},
        {"$sum": "$p", "window": {"documents": [-1, 0], "unit": "day"}},
        {"$sum": "$p", "window": {"range": [-1, 0], "unit": "day"}},
        {"$linearFill": "$s"},
    ],
)
def test_bad_window_operators(prices: Collection[dict[str, Any]], output: dict[str, Any]) -> None:
    with pytest.raises(pymongo.errors.OperationFailure):
        window(prices, output)


@pytest.mark.parametrize(
    ("coll", "output", "code"),
    [
        (
            "prices",
            {"$derivative": {"input": "$p", "unit": "day"}, "window": {"documents": [-1, 0]}},
            5624900,
        ),
        ("meter", {"$derivative": {"input": "$km"}, "window": {"documents": [-1, 0]}}, 5624901),
        ("prices", {"$derivative": {"input": "$p"}, "window": {"documents": [-1, 0]}}, 5624903),
        ("meter", {"$integral": {"input": "$kw"}}, 5423902),
        ("prices", {"$integral": {"input": "$p"}}, 5423900),
        ("prices", {"$integral": {"input": "$t", "unit": "hour"}}, 5423901),
    ],
)
def test_rates_need_numbers_and_dates_with_units(
    db: Database[dict[str, Any]],
    prices: Collection[dict[str, Any]],
    meter: Collection[dict[str, Any]],
    coll: str,
    output: dict[str, Any],
    code: int,
) -> None:
    sort = "at" if coll == "meter" else "t"
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        window(db[coll], output, sort)
    assert failure.value.code == code


@pytest.mark.parametrize(
    ("bounds", "code"),
    [({"range": [-1.5, 0], "unit": "hour"}, 9), ({"range": [-1, 0], "unit": "day"}, 8947401)],
)
def test_bad_range_windows_over_dates(
    meter: Collection[dict[str, Any]], bounds: dict[str, Any], code: int
) -> None:
    stage = {
        "sortBy": {"at": 1 if code == 9 else -1},
        "output": {"w": {"$sum": 1, "window": bounds}},
    }
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        list(meter.aggregate([{"$setWindowFields": stage}]))
    assert failure.value.code == code


def test_linear_fill_needs_distinct_sort_values(prices: Collection[dict[str, Any]]) -> None:
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        window(prices, {"$linearFill": "$p"}, "t", partitionBy=None)
    assert failure.value.code == 6050106


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"output": {"p": {"method": "nearest"}}, "sortBy": {"t": 1}}, 6050202),
        ({"output": {"p": {"value": 1, "method": "locf"}}}, 6050201),
        ({"output": {"p": 1}}, 6050200),
        ({"output": {"p": {"value": 1}}, "partitionBy": "$s", "partitionByFields": ["s"]}, 6050204),
        ({"output": {"p": {"value": 1}}, "partitionByFields": ["$s"]}, 16410),
        ({"output": {}}, 6050203),
        ({"sortBy": {"t": 1}}, 40414),
        ({"output": {"p": {"value": 1}}, "bogus": 1}, 40415),
        ({"output": {"p": {"value": 1, "bogus": 1}}}, 40415),
    ],
)
def test_bad_fill_stages(
    prices: Collection[dict[str, Any]], spec: dict[str, Any], code: int
) -> None:
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        list(prices.aggregate([{"$fill": spec}]))
    assert failure.value.code == code


def test_fill_linear_needs_a_sort(prices: Collection[dict[str, Any]]) -> None:
    with pytest.raises(pymongo.errors.OperationFailure):
        list(prices.aggregate([{"$fill": {"output": {"p": {"method": "linear"}}}}]))
