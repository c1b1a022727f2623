"""Window operators that walk a partition in order rather than fold a window
(``$locf``, ``$linearFill``, ``$expMovingAvg``), the two that read the ``sortBy``
values as the x axis (``$derivative``, ``$integral``, with ``unit`` for dates), and the
``$fill`` stage, which is a ``$setWindowFields`` of ``$locf``/``$linearFill`` and an
``$addFields`` of ``$ifNull`` as MongoDB desugars it.

Each takes one partition's documents in ``sortBy`` order and gives a value for each.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128

from heliosdb.errors import invalid
from heliosdb.services.documents.bsonform import date_millis
from heliosdb.services.documents.date_expressions import add_to_date
from heliosdb.services.documents.expression_scope import is_number, nullish, number, present
from heliosdb.services.documents.expressions import evaluate, field_values

# the units whose length is fixed: what $derivative and $integral divide by
UNIT_MILLIS = {
    "week": 604_800_000,
    "day": 86_400_000,
    "hour": 3_600_000,
    "minute": 60_000,
    "second": 1000,
    "millisecond": 1,
}
UNITS = ("year", "quarter", "month", *UNIT_MILLIS)
WALKING = ("$locf", "$linearFill", "$expMovingAvg")
AXIS = ("$derivative", "$integral")
Docs = list[dict[str, Any]]


def sort_value(doc: dict[str, Any], sort: dict[str, Any]) -> Any:
    return present(field_values(doc, next(iter(sort))))


# MongoDB's codes for a sortBy value of the wrong type: a unit without a date, a date
# without a unit, no number
_AXIS_CODES = {"$derivative": (5624900, 5624901, 5624902), "$integral": (5423901, 5423902, 5423902)}


def axis(value: Any, unit: str | None, op: str) -> float:
    """A ``sortBy`` value as a number on the x axis: a number itself, a date in
    ``unit``s since the epoch (a unit is needed for dates, and only for them)."""
    not_date, needs_unit, not_number = _AXIS_CODES[op]
    if unit is not None:
        if not isinstance(value, dt.datetime):
            raise invalid(
                f"{op} with 'unit' expects the sortBy field to be a Date", location=not_date
            )
        return date_millis(value) / UNIT_MILLIS[unit]
    if isinstance(value, dt.datetime):
        raise invalid(f"{op} where the sortBy is a Date requires an 'unit'", location=needs_unit)
    if not is_number(value) or isinstance(value, bool):
        raise invalid(
            f"{op} (with no 'unit') expects the sortBy field to be numeric", location=not_number
        )
    return float(number(value))


def check_unit(value: Any, op: str, units: tuple[str, ...] = tuple(UNIT_MILLIS)) -> str:
    if not isinstance(value, str) or value not in units:
        raise invalid(f"{op}: unknown time unit value: {value!r}", kind="bad_value")
    return value


def locf(docs: Docs, arg: Any) -> list[Any]:
    """Each document's value, or the last non-null one before it (null at first)."""
    out: list[Any] = []
    last: Any = None
    for doc in docs:
        value = evaluate(arg, doc)
        if not nullish(value):
            last = value
        out.append(last)
    return out


def linear_fill(docs: Docs, arg: Any, sort: dict[str, Any]) -> list[Any]:
    """Each null or missing value on a straight line between the non-null values
    around it, by the sortBy value (null before the first and after the last)."""
    values = [evaluate(arg, doc) for doc in docs]
    xs: list[float] = []
    for doc in docs:
        x = sort_value(doc, sort)
        xs.append(date_millis(x) if isinstance(x, dt.datetime) else _x_number(x))
    if len(set(xs)) != len(xs):
        raise invalid(
            "There can be no repeated values in the sort field in the same partition",
            location=6050106,
        )
    out: list[Any] = list(values)
    previous: int | None = None
    for i, value in enumerate(values):
        if nullish(value):
            out[i] = None
            continue
        if not is_number(value) or isinstance(value, bool):
            raise invalid(
                f"Value to be filled must be numeric or nullish, but found {value!r}",
                kind="type_mismatch",
            )
        if previous is not None and i - previous > 1:
            low, high = float(number(values[previous])), float(number(value))
            for j in range(previous + 1, i):
                share = (xs[j] - xs[previous]) / (xs[i] - xs[previous])
                out[j] = low + (high - low) * share
        previous = i
    return out


def _x_number(value: Any) -> float:
    if not is_number(value) or isinstance(value, bool):
        raise invalid(
            f"Value of the sortBy field must be numeric or a date, but found {value!r}",
            kind="type_mismatch",
        )
    return float(number(value))


def exp_moving_avg(docs: Docs, arg: Any) -> list[Any]:
    """Each document's exponentially weighted mean of the values so far: ``alpha``
    times its value plus ``1 - alpha`` times the mean before it (``alpha`` is 2 / (N +
    1) for ``N``); a value that is no number leaves the mean as it was."""
    expr, alpha = check_exp_moving_avg(arg)
    out: list[Any] = []
    mean: Any = None
    for doc in docs:
        value = evaluate(expr, doc)
        if is_number(value) and not isinstance(value, bool):
            if isinstance(value, Decimal128) or isinstance(mean, Decimal):
                new = Decimal(str(number(value)))
                weight = Decimal(str(alpha))
                mean = new if mean is None else new * weight + Decimal(str(mean)) * (1 - weight)
            else:
                new_f = float(value)
                mean = new_f if mean is None else new_f * alpha + mean * (1 - alpha)
        out.append(Decimal128(mean) if isinstance(mean, Decimal) else mean)
    return out


def check_exp_moving_avg(arg: Any) -> tuple[Any, float]:
    if not isinstance(arg, dict) or "input" not in arg:
        raise invalid(
            "$expMovingAvg must have exactly one of 'N' or 'alpha', and 'input'",
            kind="failed_to_parse",
        )
    unknown = set(arg) - {"input", "N", "alpha"}
    if unknown or ("N" in arg) == ("alpha" in arg):
        raise invalid(
            "$expMovingAvg takes 'input' and exactly one of 'N' or 'alpha'",
            kind="failed_to_parse",
        )
    if "N" in arg:
        n = arg["N"]
        if isinstance(n, bool) or not is_number(n) or number(n) != int(number(n)) or n <= 0:
            raise invalid("'N' field must be an integer greater than zero", kind="failed_to_parse")
        return arg["input"], 2.0 / (int(number(n)) + 1)
    alpha = arg["alpha"]
    if isinstance(alpha, bool) or not is_number(alpha) or not 0 < float(number(alpha)) < 1:
        raise invalid("'alpha' must be a number between 0 and 1 exclusive", kind="failed_to_parse")
    return arg["input"], float(number(alpha))


def check_axis(arg: Any, op: str) -> tuple[Any, str | None]:
    """``$derivative``/``$integral``'s input expression and unit."""
    if not isinstance(arg, dict) or "input" not in arg or set(arg) - {"input", "unit"}:
        raise invalid(f"{op} takes 'input' and an optional 'unit'", kind="failed_to_parse")
    unit = arg.get("unit")
    return arg["input"], None if unit is None else check_unit(unit, op)


def derivative(ys: list[Any], xs: list[float]) -> Any:
    """The slope from the first to the last point of the window (null for a window of
    one point, or of no run); its first and last values must be numbers."""
    if not ys:
        return None
    y0, y1 = ys[0], ys[-1]
    for y in (y0, y1):
        if nullish(y):
            raise invalid("$derivative input must not be null or missing", location=5624903)
        if not is_number(y) or isinstance(y, bool):
            raise invalid(f"$derivative input must be numeric, found {y!r}", kind="type_mismatch")
    run = xs[-1] - xs[0]
    if run == 0:
        return None
    return (float(number(y1)) - float(number(y0))) / run


def integral(ys: list[Any], xs: list[float]) -> Any:
    """The area under the window's points by the trapezoidal rule (0 for one point,
    null for none); every value must be a number."""
    for y in ys:
        if nullish(y) or not is_number(y) or isinstance(y, bool):
            raise invalid(
                "The input value of $integral window function must be a vector of 2 value, "
                "the first value must be numeric or date type and the second must be numeric.",
                location=5423900,
            )
    if not ys:
        return None
    total = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        total += (x1 - x0) * (float(number(y0)) + float(number(y1))) / 2
    return total


def shifted(value: Any, unit: str, amount: float) -> float:
    """The axis key (milliseconds) of date ``value`` moved ``amount`` units."""
    if unit in UNIT_MILLIS:
        return date_millis(value) + amount * UNIT_MILLIS[unit]
    return date_millis(add_to_date(value, unit, int(amount), dt.UTC))


# $fill


def fill_stages(arg: Any) -> list[dict[str, Any]]:
    """The stages ``$fill`` stands for: a ``$setWindowFields`` of the ``method`` fields,
    then an ``$addFields`` of the ``value`` ones (document_source_fill.cpp, its codes)."""
    if not isinstance(arg, dict):
        raise invalid("The $fill stage specification must be an object", kind="failed_to_parse")
    _known(arg, ("partitionBy", "partitionByFields", "sortBy", "output"))
    if "output" not in arg:
        raise invalid("$fill missing required field 'output'", location=40414)
    output = arg["output"]
    if not isinstance(output, dict) or not output:
        raise invalid(
            "The output field in '$fill' must contain an object with at least one element",
            location=6050203,
        )
    if "partitionBy" in arg and "partitionByFields" in arg:
        raise invalid(
            "Maximum one of 'partitionBy' and 'partitionByFields can be specified in '$fill'",
            location=6050204,
        )
    partition: Any = arg.get("partitionBy")
    if "partitionByFields" in arg:
        fields = arg["partitionByFields"]
        if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
            raise invalid(
                "'partitionByFields' must be an array of field names", kind="type_mismatch"
            )
        if any(f.startswith("$") for f in fields):
            raise invalid("FieldPath field names may not start with '$'", location=16410)
        partition = {f: f"${f}" for f in fields}
    windowed: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for name, spec in output.items():
        if not isinstance(spec, dict):
            raise invalid(
                "Each fill output specification must be an object with exactly one field",
                location=6050200,
            )
        _known(spec, ("value", "method"))
        if "method" in spec:
            if "value" in spec:
                raise invalid(
                    "Each fill output specification must have exactly one of 'method' or "
                    "'value' fields, not both",
                    location=6050201,
                )
            if spec["method"] not in ("locf", "linear"):
                raise invalid("Method must be either locf or linear", location=6050202)
            windowed[name] = {("$locf" if spec["method"] == "locf" else "$linearFill"): f"${name}"}
        if "value" in spec:
            values[name] = {"$ifNull": [f"${name}", spec["value"]]}
    stages: list[dict[str, Any]] = []
    if windowed:
        window: dict[str, Any] = {"output": windowed}
        if partition is not None:
            window["partitionBy"] = partition
        if "sortBy" in arg:
            window["sortBy"] = arg["sortBy"]
        stages.append({"$setWindowFields": window})
    if values:
        stages.append({"$addFields": values})
    return stages


def _known(spec: dict[str, Any], fields: tuple[str, ...]) -> None:
    unknown = [name for name in spec if name not in fields]
    if unknown:
        raise invalid(f"$fill: unknown field '{unknown[0]}'", location=40415)
