"""protobuf Value <-> Python: parameters in, rows out, chosen by column type."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid

import pytest

from heliosdb.errors import HeliosError
from heliosdb.interfaces.grpc.values import (
    dict_of,
    encoder_for,
    param_of,
    row_encoder,
    shape_of,
    struct_of,
)
from heliosdb.services.query import Column
from heliosdb.v1 import heliosdb_pb2 as pb


def test_param_of_every_kind() -> None:
    stamp = pb.Value()
    stamp.timestamp_value.FromDatetime(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert param_of(pb.Value(), 1) is None
    assert param_of(pb.Value(null_value=pb.NULL_VALUE), 1) is None
    assert param_of(pb.Value(bool_value=False), 1) is False
    assert param_of(pb.Value(int_value=-(2**63)), 1) == -(2**63)
    assert param_of(pb.Value(double_value=0.5), 1) == 0.5
    assert param_of(pb.Value(string_value="x"), 1) == "x"
    assert param_of(pb.Value(bytes_value=b"\x01\x02"), 1) == "AQI="
    assert param_of(stamp, 1) == "2024-01-02T03:04:05+00:00"
    assert param_of(pb.Value(json_value='{"a": [1]}'), 1) == {"a": [1]}
    array = pb.Value(array_value=pb.ArrayValue(values=[pb.Value(int_value=1), pb.Value()]))
    assert param_of(array, 1) == [1, None]
    assert param_of(pb.Value(vector_value=pb.VectorValue(values=[1.5])), 1) == [1.5]


def test_param_of_bad_json_names_the_parameter() -> None:
    with pytest.raises(HeliosError) as caught:
        param_of(pb.Value(json_value="{"), 3)
    assert "$3" in caught.value.message


@pytest.mark.parametrize(
    ("type_name", "value", "kind"),
    [
        ("int4", 5, "int_value"),
        ("int8", 2**63 - 1, "int_value"),
        ("numeric", decimal.Decimal("1.10"), "string_value"),
        ("float8", "NaN", "double_value"),
        ("float4", 1.5, "double_value"),
        ("bool", True, "bool_value"),
        ("text", "t", "string_value"),
        ("bytea", b"\x00", "bytes_value"),
        ("timestamp", dt.datetime(2024, 1, 1), "timestamp_value"),
        ("date", dt.date(2024, 1, 1), "string_value"),
        ("uuid", uuid.UUID(int=1), "string_value"),
        ("jsonb", [1, 2], "json_value"),
        ("json", "text", "json_value"),
        ("vector", [1.0, 2.0], "vector_value"),
        ("int4[]", [1, None], "array_value"),
        ("jsonb[]", [{"a": 1}], "array_value"),
        ("anything", None, "null_value"),
    ],
)
def test_encoder_for_column_types(type_name: str, value: object, kind: str) -> None:
    assert encoder_for(type_name)(value).WhichOneof("kind") == kind


def test_row_encoder_keeps_non_finite_floats() -> None:
    encode = row_encoder([Column("a", "float8"), Column("b", "float8")])
    row = encode(["Infinity", float("nan")])
    assert row.values[0].double_value == math.inf
    assert math.isnan(row.values[1].double_value)


def test_struct_round_trip_keeps_integers() -> None:
    data = {"n": 3, "f": 1.5, "s": "x", "b": True, "l": [1, "a"], "o": {"k": None}}
    assert dict_of(struct_of(data)) == data


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=dt.UTC),
        dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime(2024, 1, 1),
        dt.datetime.max,
    ],
)
def test_row_encoder_timestamps_match_from_datetime(moment: dt.datetime) -> None:
    expected = pb.Value()
    expected.timestamp_value.FromDatetime(
        moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    )
    row = row_encoder([Column("t", "timestamptz")])([moment])
    assert row.values[0] == expected


def test_row_encoder_typed_columns_and_nulls() -> None:
    columns = [
        Column(n, t) for n, t in [("i", "int8"), ("s", "text"), ("b", "bool"), ("n", "numeric")]
    ]
    row = row_encoder(columns)([7, "x", False, decimal.Decimal("1.5")])
    assert [v.WhichOneof("kind") for v in row.values] == [
        "int_value", "string_value", "bool_value", "string_value"
    ]  # fmt: skip
    nulls = row_encoder(columns)([None, None, None, None])
    assert all(v.WhichOneof("kind") == "null_value" for v in nulls.values)


def test_shape_of_is_worked_out_once_per_column_list() -> None:
    first = shape_of([Column("a", "int4")])
    assert shape_of([Column("a", "int4")]) is first
    assert shape_of([Column("a", "text")]) is not first
    assert [c.name for c in first.template.columns] == ["a"]


def test_shape_of_a_plan_tuple_matches_the_shape_by_names() -> None:
    # A plan's column tuple is looked up by the object itself; the answer must be the
    # one the names give, and a new tuple with other names must not get the old shape.
    plan = (Column("id", "int8"), Column("at", "timestamptz"))
    by_names = shape_of([Column("id", "int8"), Column("at", "timestamptz")])
    assert shape_of(plan) is by_names
    assert shape_of(plan) is by_names  # the second time by identity
    other = (Column("id", "text"), Column("at", "timestamptz"))
    assert shape_of(other) is not by_names
    assert [c.type for c in shape_of(other).template.columns] == ["text", "timestamptz"]
