"""``$bucket``: a ``$group`` whose key is the bucket a value falls in. The key is one
``$switch`` over the boundaries (the value computed once, through ``$let``), so the
node's ``Grouper`` does the grouping and the accumulators; the buckets come back in
boundary order, the default bucket last, as MongoDB returns them."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128

from heliosdb.errors import invalid
from heliosdb.services.documents.expressions import evaluate
from heliosdb.services.documents.values import MISSING, compare, sort_key, type_rank


class _NoBucket:
    """The key of values no bucket takes when there is no default: an error, once seen."""

    def __repr__(self) -> str:
        return "NoBucket"


_NO_BUCKET = _NoBucket()


def _checked(arg: Any) -> tuple[Any, list[Any]]:
    if not isinstance(arg, dict) or "groupBy" not in arg or "boundaries" not in arg:
        raise invalid("$bucket requires 'groupBy' and 'boundaries'", kind="failed_to_parse")
    unknown = set(arg) - {"groupBy", "boundaries", "default", "output"}
    if unknown:
        raise invalid(
            f"Unrecognized option to $bucket: {sorted(unknown)[0]}", kind="failed_to_parse"
        )
    bounds = arg["boundaries"]
    if not isinstance(bounds, list) or len(bounds) < 2:
        raise invalid("$bucket requires at least 2 boundaries", kind="bad_value")
    if any(type_rank(b) != type_rank(bounds[0]) for b in bounds):
        raise invalid(
            "All values in the 'boundaries' option to $bucket must have the same type",
            kind="bad_value",
        )
    if any(compare(a, b) >= 0 for a, b in itertools.pairwise(bounds)):
        raise invalid(
            "The 'boundaries' option to $bucket must be sorted in ascending order", kind="bad_value"
        )
    if "default" in arg:
        default = arg["default"]
        if type_rank(default) == type_rank(bounds[0]) and (
            compare(default, bounds[0]) >= 0 and compare(default, bounds[-1]) < 0
        ):
            raise invalid(
                "The $bucket 'default' field must be less than the lowest boundary or greater "
                "than or equal to the highest boundary",
                kind="bad_value",
            )
    output = arg.get("output", {"count": {"$sum": 1}})
    if not isinstance(output, dict) or "_id" in output:
        raise invalid(
            "$bucket's 'output' must be an object of accumulators", kind="failed_to_parse"
        )
    return output, bounds


def group_spec(arg: Any) -> dict[str, Any]:
    """The ``$group`` that makes ``arg``'s buckets."""
    output, bounds = _checked(arg)
    branches = [
        {
            "case": {
                "$and": [{"$gte": ["$$v", {"$literal": low}]}, {"$lt": ["$$v", {"$literal": high}]}]
            },
            "then": {"$literal": low},
        }
        for low, high in itertools.pairwise(bounds)
    ]
    default = {"$literal": arg.get("default", _NO_BUCKET)}
    key = {
        "$let": {
            "vars": {"v": arg["groupBy"]},
            "in": {"$switch": {"branches": branches, "default": default}},
        }
    }
    return {"_id": key, **output}


def in_order(arg: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The buckets in boundary order, the default one last."""
    bounds = arg["boundaries"]
    if any(row["_id"] is _NO_BUCKET for row in rows):
        raise invalid(
            "$bucket could not find a matching branch for an input, and no default was specified.",
            kind="bad_value",
        )

    def place(row: dict[str, Any]) -> int:
        for index, low in enumerate(bounds):
            if type_rank(row["_id"]) == type_rank(low) and compare(row["_id"], low) == 0:
                return index
        return len(bounds)

    return sorted(rows, key=place)


# $bucketAuto: MongoDB's preferred number series (granularity_rounder_preferred_numbers.cpp),
# each scaled by powers of ten; R40 as MongoDB has it (without 335)
SERIES: dict[str, tuple[float, ...]] = {
    "R5": (10, 16, 25, 40, 63),
    "R10": (100, 125, 160, 200, 250, 315, 400, 500, 630, 800),
    "R20": (
        *(100, 112, 125, 140, 160, 180, 200, 224, 250, 280),
        *(315, 355, 400, 450, 500, 560, 630, 710, 800, 900),
    ),
    "R40": (
        *(100, 106, 112, 118, 125, 132, 140, 150, 160, 170, 180, 190, 200),
        *(212, 224, 236, 250, 265, 280, 300, 315, 355, 375, 400, 425, 450),
        *(475, 500, 530, 560, 600, 630, 670, 710, 750, 800, 850, 900, 950),
    ),
    "R80": (
        *(103, 109, 115, 122, 128, 136, 145, 155, 165, 175, 185, 195, 206, 218),
        *(230, 243, 258, 272, 290, 307, 325, 345, 365, 387, 412, 437, 462, 487),
        *(515, 545, 575, 615, 650, 690, 730, 775, 825, 875, 925, 975),
    ),
    "1-2-5": (10, 20, 50),
    "E6": (10, 15, 22, 33, 47, 68),
    "E12": (10, 12, 15, 18, 22, 27, 33, 39, 47, 56, 68, 82),
    "E24": (
        *(10, 11, 12, 13, 15, 16, 18, 20, 22, 24, 27, 30),
        *(33, 36, 39, 43, 47, 51, 56, 62, 68, 75, 82, 91),
    ),
    "E48": (
        *(100, 105, 110, 115, 121, 127, 133, 140, 147, 154, 162, 169),
        *(178, 187, 196, 205, 215, 226, 237, 249, 261, 274, 287, 301),
        *(316, 332, 348, 365, 383, 402, 422, 442, 464, 487, 511, 536),
        *(562, 590, 619, 649, 681, 715, 750, 787, 825, 866, 909, 953),
    ),
    "E96": (
        *(100, 102, 105, 107, 110, 113, 115, 118, 121, 124, 127, 130, 133, 137),
        *(140, 143, 147, 150, 154, 158, 162, 165, 169, 174, 178, 182, 187, 191),
        *(196, 200, 205, 210, 215, 221, 226, 232, 237, 243, 249, 255, 261, 267),
        *(274, 280, 287, 294, 301, 309, 316, 324, 332, 340, 348, 357, 365, 374),
        *(383, 392, 402, 412, 422, 432, 442, 453, 464, 475, 487, 499, 511, 523),
        *(536, 549, 562, 576, 590, 604, 619, 634, 649, 665, 681, 698, 715, 732),
        *(750, 768, 787, 806, 825, 845, 866, 887, 909, 931, 953, 976),
    ),
    "E192": (
        *(100, 101, 102, 104, 105, 106, 107, 109, 110, 111, 113, 114, 115, 117, 118, 120),
        *(121, 123, 124, 126, 127, 129, 130, 132, 133, 135, 137, 138, 140, 142, 143, 145),
        *(147, 149, 150, 152, 154, 156, 158, 160, 162, 164, 165, 167, 169, 172, 174, 176),
        *(178, 180, 182, 184, 187, 189, 191, 193, 196, 198, 200, 203, 205, 208, 210, 213),
        *(215, 218, 221, 223, 226, 229, 232, 234, 237, 240, 243, 246, 249, 252, 255, 258),
        *(261, 264, 267, 271, 274, 277, 280, 284, 287, 291, 294, 298, 301, 305, 309, 312),
        *(316, 320, 324, 328, 332, 336, 340, 344, 348, 352, 357, 361, 365, 370, 374, 379),
        *(383, 388, 392, 397, 402, 407, 412, 417, 422, 427, 432, 437, 442, 448, 453, 459),
        *(464, 470, 475, 481, 487, 493, 499, 505, 511, 517, 523, 530, 536, 542, 549, 556),
        *(562, 569, 576, 583, 590, 597, 604, 612, 619, 626, 634, 642, 649, 657, 665, 673),
        *(681, 690, 698, 706, 715, 723, 732, 741, 750, 759, 768, 777, 787, 796, 806, 816),
        *(825, 835, 845, 856, 866, 876, 887, 898, 909, 920, 931, 942, 953, 965, 976, 988),
    ),
}
GRANULARITIES = (*SERIES, "POWERSOF2")


def round_up(granularity: str, value: Any) -> Any:
    """The granularity's next boundary above ``value`` (``value`` itself for zero)."""
    return _round(granularity, value, up=True)


def round_down(granularity: str, value: Any) -> Any:
    """The granularity's next boundary below ``value`` (``value`` itself for zero)."""
    return _round(granularity, value, up=False)


def _round(granularity: str, value: Any, *, up: bool) -> Any:
    powers = granularity == "POWERSOF2"
    codes = (40265, 40266, 40267) if powers else (40262, 40263, 40268)
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal128)):
        raise invalid(
            "A granularity rounder can only round numeric values, but found type: "
            + type_name(value),
            location=codes[0],
        )
    number = value.to_decimal() if isinstance(value, Decimal128) else value
    if number != number:
        raise invalid("A granularity rounder cannot round NaN", location=codes[1])
    if number < 0:
        raise invalid(
            "A granularity rounder can only round non-negative numbers", location=codes[2]
        )
    if number == 0:
        return value
    if powers:
        return _power_of_two(value, number, up)
    if isinstance(value, Decimal128):
        series = [Decimal(int(s)) for s in SERIES[granularity]]
        return Decimal128(_preferred(series, number, Decimal(1), Decimal(10), up))
    return _preferred(list(map(float, SERIES[granularity])), float(number), 1.0, 10.0, up)


def _preferred(series: list[Any], number: Any, multiplier: Any, ten: Any, up: bool) -> Any:
    # MongoDB's steps and arithmetic (doubles: the same products, the same last bits)
    if up:
        while number >= series[-1] * multiplier:
            multiplier *= ten
        while number < series[0] * multiplier:
            previous = series[0] * multiplier
            multiplier /= ten
            if number >= series[-1] * multiplier:
                return previous
        return next(s * multiplier for s in series if number < s * multiplier)
    while number <= series[0] * multiplier:
        multiplier /= ten
    while number > series[-1] * multiplier:
        previous = series[-1] * multiplier
        multiplier *= ten
        if number <= series[0] * multiplier:
            return previous
    below = [s for s in series if s * multiplier < number]
    return below[-1] * multiplier


def _power_of_two(value: Any, number: Any, up: bool) -> Any:
    if isinstance(value, float):
        log = math.log2(value)
        exponent = int(math.floor(log) + 1) if up else int(math.ceil(log) - 1)
    elif isinstance(value, Decimal128):
        log = float(number.ln() / Decimal(2).ln())
        exponent = int(math.floor(log) + 1) if up else int(math.ceil(log) - 1)
        return Decimal128(Decimal(2) ** exponent)
    else:
        bits = int(value).bit_length()
        power = int(value) & (int(value) - 1) == 0
        exponent = bits if up else (bits - 2 if power else bits - 1)
    return 2**exponent if exponent >= 0 else 2.0**exponent


def type_name(value: Any) -> str:
    """``value``'s BSON type name, as ``$type`` says it."""
    name: str = evaluate({"$type": {"$literal": value}}, {})
    return name


def auto_spec(arg: Any) -> tuple[Any, int, dict[str, Any], str | None]:
    """``$bucketAuto``'s groupBy, bucket count, accumulators and granularity, checked
    with MongoDB's codes before any document is read."""
    if not isinstance(arg, dict):
        raise invalid(
            f"The argument to $bucketAuto must be an object, but found type: {type_name(arg)}",
            location=40240,
        )
    group_by: Any = None
    count: int | None = None
    output: dict[str, Any] = {}
    granularity: str | None = None
    for name, value in arg.items():
        if name == "groupBy":
            if not (
                (isinstance(value, dict) and value and next(iter(value)).startswith("$"))
                or (isinstance(value, str) and len(value) > 1 and value.startswith("$"))
            ):
                raise invalid(
                    "The $bucketAuto 'groupBy' field must be defined as a $-prefixed path or an "
                    "expression object",
                    location=40239,
                )
            group_by = value
        elif name == "buckets":
            count = _bucket_count(value)
        elif name == "output":
            _expect(isinstance(value, dict), name, "an object", value, 40244)
            output = value
        elif name == "granularity":
            _expect(isinstance(value, str), name, "a string", value, 40261)
            if value not in GRANULARITIES:
                raise invalid(f"Unknown rounding granularity '{value}'", location=40257)
            granularity = value
        else:
            raise invalid(f"Unrecognized option to $bucketAuto: {name}", location=40245)
    if group_by is None or count is None:
        raise invalid(
            "$bucketAuto requires 'groupBy' and 'buckets' to be specified", location=40246
        )
    if count <= 0:
        raise invalid(
            f"The $bucketAuto 'buckets' field must be greater than 0, but found: {count}",
            location=40243,
        )
    return group_by, count, output or {"count": {"$sum": 1}}, granularity


def _expect(ok: bool, field: str, what: str, value: Any, code: int) -> None:
    if not ok:
        raise invalid(
            f"The $bucketAuto '{field}' field must be {what}, but found type: {type_name(value)}",
            location=code,
        )


def _bucket_count(value: Any) -> int:
    numeric = isinstance(value, (int, float, Decimal128)) and not isinstance(value, bool)
    _expect(numeric, "buckets", "a numeric value", value, 40241)
    number = value.to_decimal() if isinstance(value, Decimal128) else value
    if number != number or number in (math.inf, -math.inf) or number != int(number):
        raise invalid(
            "The $bucketAuto 'buckets' field must be representable as a 32-bit integer",
            location=40242,
        )
    if not -(2**31) <= int(number) < 2**31:
        raise invalid(
            "The $bucketAuto 'buckets' field must be representable as a 32-bit integer",
            location=40242,
        )
    return int(number)


# a $group over one bucket's documents: its spec in, a grouper (feed, rows) out
GroupMaker = Callable[[dict[str, Any]], Any]


def auto(docs: list[dict[str, Any]], arg: Any, make_group: GroupMaker) -> list[dict[str, Any]]:
    """``$bucketAuto``: the documents sorted by their groupBy value (missing as null),
    cut into about equal buckets as MongoDB cuts them (document_source_bucket_auto.cpp):
    each bucket takes round(n / buckets) documents (at least one; the last one, all that
    are left), then every following document with the same value (or, with a
    granularity, below its rounded-up maximum); a bucket's max is the next bucket's min
    (the last one's: its largest value), and with a granularity the first min is
    rounded down and each max rounded up."""
    group_by, count, output, granularity = auto_spec(arg)
    make_group({"_id": None, **output})  # the accumulators checked before any document
    keyed = []
    for doc in docs:
        key = evaluate(group_by, doc)
        key = None if key is MISSING else key
        if granularity is not None:
            _check_granular(key)
        keyed.append((key, doc))
    keyed.sort(key=lambda item: sort_key(item[0]))
    size = max(1, _round_half_away(len(keyed) / count)) if keyed else 0
    out: list[dict[str, Any]] = []
    start = 0
    previous_max: Any = MISSING
    for number in range(1, count + 1):
        if start >= len(keyed):
            break
        end = len(keyed) if number == count else min(len(keyed), start + size)
        low = keyed[start][0]
        high = keyed[end - 1][0]
        if granularity is None:
            while end < len(keyed) and compare(keyed[end][0], high) == 0:
                end += 1
            if end < len(keyed):
                high = keyed[end][0]
        else:
            low = previous_max if previous_max is not MISSING else round_down(granularity, low)
            boundary = round_up(granularity, high)
            while end < len(keyed) and (
                compare(boundary, keyed[end][0]) > 0 or compare(high, keyed[end][0]) == 0
            ):
                high = keyed[end][0]
                end += 1
            zero = compare(boundary, 0) == 0
            high = round_down(granularity, keyed[end][0]) if zero and end < len(keyed) else boundary
            previous_max = high
        group = make_group({"_id": None, **output})
        group.feed([doc for _, doc in keyed[start:end]])
        row = group.rows()[0]
        row["_id"] = {"min": low, "max": high}
        out.append(row)
        start = end
    return out


def _check_granular(key: Any) -> None:
    if isinstance(key, bool) or not isinstance(key, (int, float, Decimal128)):
        raise invalid(
            "$bucketAuto can specify a 'granularity' with numeric boundaries only, but found a "
            f"value with type: {type_name(key)}",
            location=40258,
        )
    number = key.to_decimal() if isinstance(key, Decimal128) else key
    if number != number:
        raise invalid(
            "$bucketAuto can specify a 'granularity' with numeric boundaries only, but found a NaN",
            location=40259,
        )
    if number < 0:
        raise invalid(
            "$bucketAuto can specify a 'granularity' with non-negative numbers only, but found a "
            "negative number",
            location=40260,
        )


def _round_half_away(value: float) -> int:
    """C's ``std::round``: halves away from zero (Python's ``round`` takes them to even)."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)
