"""protobuf ``Value`` <-> Python values: parameters in, rows out (see the .proto's table).

Parameters become the JSON forms the query service takes (engine/codecs.py): bytes as
base64, timestamps as ISO 8601 text, JSON as the parsed value. Row values are encoded
by column type, chosen once per result: ``json``/``jsonb`` columns as ``json_value``,
``vector`` as ``vector_value``, arrays element by element, and everything else by its
Python type.

Rows are built in place (``values.add(int_value=...)`` on the row's repeated field, one
adder per column chosen once per result shape) rather than as free-standing ``Value``
messages copied into the row: per row that is several times cheaper, and gRPC's hot
paths (ExecuteQuery, ExecuteQueryStream) spend most of their own Python time here.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict

from heliosdb.engine.codecs import json_default
from heliosdb.errors import invalid
from heliosdb.services.query import Column
from heliosdb.v1 import heliosdb_pb2 as pb

Encoder = Callable[[Any], pb.Value]
Adder = Callable[[Any, Any], None]  # (a repeated Value field, a Python value) -> appended
NULL = pb.Value(null_value=pb.NULL_VALUE)
NULL_VALUE = pb.NULL_VALUE
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
# Parameter kinds that are the Python value as it is.
_PLAIN_KINDS = frozenset({"int_value", "string_value", "double_value", "bool_value"})


def param_of(value: pb.Value, position: int) -> Any:
    kind = value.WhichOneof("kind")
    if kind in _PLAIN_KINDS:
        return getattr(value, kind)
    if kind is None or kind == "null_value":
        return None
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime(tzinfo=dt.UTC).isoformat()
    if kind == "json_value":
        try:
            return orjson.loads(value.json_value)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"parameter ${position}: json_value is not valid JSON: {exc}") from None
    if kind == "array_value":
        return [param_of(v, position) for v in value.array_value.values]
    if kind == "vector_value":
        return list(value.vector_value.values)
    return getattr(value, kind)


def params_of(values: Sequence[pb.Value]) -> list[Any]:
    return [param_of(v, i + 1) for i, v in enumerate(values)]


def encode_any(value: Any) -> pb.Value:
    """A Value by Python type, for columns whose type says nothing more."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return pb.Value(bool_value=value)
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return pb.Value(int_value=value)
        return pb.Value(string_value=str(value))
    if isinstance(value, float):
        return pb.Value(double_value=value)
    if isinstance(value, str):
        return pb.Value(string_value=value)
    if isinstance(value, bytes | bytearray | memoryview):
        return pb.Value(bytes_value=bytes(value))
    if isinstance(value, dt.datetime):
        out = pb.Value()
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        out.timestamp_value.FromDatetime(moment)
        return out
    if isinstance(value, dt.date | dt.time):
        return pb.Value(string_value=value.isoformat())
    if isinstance(value, list | tuple):
        return pb.Value(array_value=pb.ArrayValue(values=[encode_any(v) for v in value]))
    converted = json_default(value)
    if isinstance(converted, str):
        return pb.Value(string_value=converted)
    return pb.Value(json_value=orjson.dumps(converted, default=json_default).decode())


def _encode_json(value: Any) -> pb.Value:
    if value is None:
        return NULL
    return pb.Value(json_value=orjson.dumps(value, default=json_default).decode())


def _encode_vector(value: Any) -> pb.Value:
    if value is None:
        return NULL
    return pb.Value(vector_value=pb.VectorValue(values=value))


def _encode_float(value: Any) -> pb.Value:
    if value is None:
        return NULL
    # The query service writes non-finite floats as JSON-safe text; protobuf carries them.
    return pb.Value(double_value=float(value))


def _array_of(element: Encoder) -> Encoder:
    def encode(value: Any) -> pb.Value:
        if value is None:
            return NULL
        return pb.Value(array_value=pb.ArrayValue(values=[element(v) for v in value]))

    return encode


def encoder_for(type_name: str) -> Encoder:
    if type_name.endswith("[]"):
        return _array_of(encoder_for(type_name[:-2]))
    if type_name in ("json", "jsonb"):
        return _encode_json
    if type_name == "vector":
        return _encode_vector
    if type_name in ("float4", "float8"):
        return _encode_float
    return encode_any


def _add_int(values: Any, value: Any) -> None:
    if value is None:
        values.add(null_value=NULL_VALUE)
    else:
        values.add(int_value=value)


def _add_text(values: Any, value: Any) -> None:
    if value is None:
        values.add(null_value=NULL_VALUE)
    else:
        values.add(string_value=value)


def _add_bool(values: Any, value: Any) -> None:
    if value is None:
        values.add(null_value=NULL_VALUE)
    else:
        values.add(bool_value=value)


def _add_float(values: Any, value: Any) -> None:
    if value is None:
        values.add(null_value=NULL_VALUE)
    else:
        values.add(double_value=float(value))  # float("NaN") for the JSON-safe text form


def _add_timestamp(values: Any, value: Any) -> None:
    if value is None:
        values.add(null_value=NULL_VALUE)
        return
    # What Timestamp.FromDatetime computes, without its per-call calendar work.
    delta = value - (_EPOCH if value.tzinfo is not None else _NAIVE_EPOCH)
    stamp = values.add().timestamp_value
    stamp.seconds = delta.days * 86400 + delta.seconds
    stamp.nanos = delta.microseconds * 1000


def _add_with(encode: Encoder) -> Adder:
    def add(values: Any, value: Any) -> None:
        values.append(encode(value))

    return add


_ADDERS: dict[str, Adder] = {
    **dict.fromkeys(("int2", "int4", "int8", "oid"), _add_int),
    **dict.fromkeys(("text", "varchar", "bpchar", "name", "citext", "unknown"), _add_text),
    "bool": _add_bool,
    "float4": _add_float,
    "float8": _add_float,
    "timestamp": _add_timestamp,
    "timestamptz": _add_timestamp,
}


def adder_for(type_name: str) -> Adder:
    """Appends a column's value to a row's repeated ``values`` field in place."""
    return _ADDERS.get(type_name) or _add_with(encoder_for(type_name))


RowFiller = Callable[[Any, Sequence[Any]], None]


def row_filler(columns: Sequence[Column]) -> RowFiller:
    """``fill(row.values, row)``: one result row's values appended to a Row in place."""
    adders = [adder_for(c.type) for c in columns]
    if len(adders) == 1:
        (only,) = adders

        def fill_one(values: Any, row: Sequence[Any]) -> None:
            only(values, row[0])

        return fill_one

    def fill(values: Any, row: Sequence[Any]) -> None:
        # A row has a value per column (the result's own columns): zip's strict=True
        # would parse its keyword argument on every row.
        for add, value in zip(adders, row):  # noqa: B905
            add(values, value)

    return fill


def row_encoder(columns: Sequence[Column]) -> Callable[[Sequence[Any]], pb.Row]:
    fill = row_filler(columns)

    def encode(row: Sequence[Any]) -> pb.Row:
        out = pb.Row()
        fill(out.values, row)
        return out

    return encode


def columns_of(columns: Sequence[Column]) -> list[pb.Column]:
    return [pb.Column(name=c.name, type=c.type) for c in columns]


@dataclass(frozen=True, slots=True)
class ResultShape:
    """What a result's columns decide, worked out once per distinct column list."""

    template: pb.QueryResponse  # only ``columns`` set: copied into each response
    fill: RowFiller


_SHAPES: dict[tuple[tuple[str, str], ...], ResultShape] = {}
# By the column list object itself: a prepared statement's plan hands every result the
# same tuple (QueryResult.columns), so most lookups need no key built from the names.
# The entry holds the object, so its id stays its own while the entry lives.
_SHAPES_OF: dict[int, tuple[Sequence[Column], ResultShape]] = {}
_MAX_SHAPES = 1024


def shape_of(columns: Sequence[Column]) -> ResultShape:
    known = _SHAPES_OF.get(id(columns))
    if known is not None and known[0] is columns:
        return known[1]
    shape = _shape_by_names(columns)
    if isinstance(columns, tuple):  # immutable: what it says cannot change under the entry
        if len(_SHAPES_OF) >= _MAX_SHAPES:
            _SHAPES_OF.clear()
        _SHAPES_OF[id(columns)] = (columns, shape)
    return shape


def _shape_by_names(columns: Sequence[Column]) -> ResultShape:
    key = tuple([(c.name, c.type) for c in columns])
    shape = _SHAPES.get(key)
    if shape is None:
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        shape = ResultShape(pb.QueryResponse(columns=columns_of(columns)), row_filler(columns))
        _SHAPES[key] = shape
    return shape


def dict_of(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON data; whole-number doubles come back as integers."""
    return _ints(MessageToDict(struct))  # type: ignore[no-any-return]


def _ints(value: Any) -> Any:
    if (
        isinstance(value, float)
        and math.isfinite(value)
        and value.is_integer()
        and abs(value) < 2**53
    ):
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def struct_of(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(orjson.loads(orjson.dumps(data, default=json_default)))
    return out
