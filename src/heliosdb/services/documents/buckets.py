"""``$bucket``: a ``$group`` whose key is the bucket a value falls in. The key is one
``$switch`` over the boundaries (the value computed once, through ``$let``), so the
node's ``Grouper`` does the grouping and the accumulators; the buckets come back in
boundary order, the default bucket last, as MongoDB returns them."""

from __future__ import annotations

import itertools
from typing import Any

from heliosdb.errors import invalid
from heliosdb.services.documents.values import compare, type_rank


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
