"""The arguments of ``$skip``, ``$limit``, ``$sample``, ``$unwind``, ``$replaceRoot`` /
``$replaceWith`` and ``$documents``, checked as MongoDB checks them, with its error
codes and messages (its ``location`` numbers: interfaces/mongodb/errors.py answers
them as they are).

MongoDB parses a whole pipeline before it reads a document, so ``check`` runs over a
pipeline's stages first (an empty collection fails as a full one does); the stages
themselves read their arguments through the same functions.
"""

from __future__ import annotations

import datetime
import math
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.objectid import ObjectId

from heliosdb.errors import HeliosError, invalid
from heliosdb.services.documents.buckets import type_name
from heliosdb.services.documents.expressions import evaluate
from heliosdb.services.documents.values import MISSING

_COUNT_CODES = {"$skip": 5107200, "$limit": 5107201}
_LONG_LIMIT = 2.0**63
_UNWIND_OPTIONS = ("path", "preserveNullAndEmptyArrays", "includeArrayIndex")


def shown(value: Any) -> str:
    """``value`` as MongoDB's messages print one (``{a: 1, b: "x"}``, ``[1, 2]``)."""
    if value is MISSING:
        return "MISSING"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    if isinstance(value, ObjectId):
        return f"ObjectId('{value}')"
    if isinstance(value, datetime.datetime):
        return f"new Date({int(value.timestamp() * 1000)})"
    return str(value)


def count(name: str, value: Any) -> int:
    """A ``$skip`` or ``$limit`` argument: a whole number a long holds, not negative, a
    limit above zero (15958)."""
    code = _COUNT_CODES[name]
    number = _whole(name, value, code)
    if number < 0:
        raise _count_error(name, f"Expected a non-negative number in: {name}: {shown(value)}")
    if name == "$limit" and number == 0:
        raise invalid("the limit must be positive", location=15958)
    return number


def _whole(name: str, value: Any, code: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal128)):
        raise _count_error(name, f"Expected a number in: {name}: {shown(value)}")
    if isinstance(value, int):
        return value
    number = value.to_decimal() if isinstance(value, Decimal128) else Decimal(value)
    if number.is_nan():
        raise _count_error(name, f"Expected an integer, but found NaN in: {name}: {shown(value)}")
    if not number.is_finite() or not -_LONG_LIMIT <= number < _LONG_LIMIT:
        raise _count_error(name, f"Cannot represent as a 64-bit integer: {name}: {shown(value)}")
    if number != number.to_integral_value():
        raise _count_error(name, f"Expected an integer: {name}: {shown(value)}")
    return int(number)


def _count_error(name: str, reason: str) -> HeliosError:
    return invalid(f"invalid argument to {name} stage: {reason}", location=_COUNT_CODES[name])


def sample_size(arg: Any) -> int:
    """``$sample``'s ``size``."""
    if not isinstance(arg, dict):
        raise invalid("the $sample stage specification must be an object", location=28745)
    size: int | None = None
    for key, value in arg.items():
        if key != "size":
            raise invalid(f"unrecognized option to $sample: {key}", location=28748)
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal128)):
            raise invalid("size argument to $sample must be a number", location=28746)
        number = float(value.to_decimal()) if isinstance(value, Decimal128) else value
        if isinstance(number, float) and not math.isfinite(number):
            number = 0 if math.isnan(number) else math.copysign(_LONG_LIMIT, number)
        size = int(number)
        if size < 0:
            raise invalid("size argument to $sample must not be negative", location=28747)
    if size is None:
        raise invalid("$sample stage must specify a size", location=28749)
    return size


def unwind(arg: Any) -> tuple[str, bool, str | None]:
    """``$unwind``'s path (without its ``$``), whether it keeps null and empty arrays,
    and the field for the array index (None: none)."""
    if isinstance(arg, str):
        arg = {"path": arg}
    elif not isinstance(arg, dict):
        raise invalid(
            "expected either a string or an object as specification for $unwind stage, "
            f"got {type_name(arg)}",
            location=15981,
        )
    for key in arg:
        if key not in _UNWIND_OPTIONS:
            raise invalid(f"unrecognized option to $unwind stage: {key}", location=28811)
    if "path" not in arg:
        raise invalid("no path specified to $unwind stage", location=28812)
    path = arg["path"]
    if not isinstance(path, str):
        raise invalid(
            f"expected a string as the path for $unwind stage, got {type_name(path)}",
            location=28808,
        )
    if not path.startswith("$"):
        raise invalid(
            f"path option to $unwind stage should be prefixed with a '$': {path}",
            location=28818,
        )
    keep = arg.get("preserveNullAndEmptyArrays", False)
    if not isinstance(keep, bool):
        raise invalid(
            "expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage, "
            f"got {type_name(keep)}",
            location=28809,
        )
    index = arg.get("includeArrayIndex")
    if index is not None and (not isinstance(index, str) or not index):
        raise invalid(
            "expected a non-empty string for the includeArrayIndex  option to $unwind "
            f"stage, got {type_name(index)}",
            location=28810,
        )
    if index is not None and index.startswith("$"):
        raise invalid(
            f"includeArrayIndex option to $unwind stage should not be prefixed with a '$': {index}",
            location=28822,
        )
    return path[1:], keep, index


def new_root_expression(name: str, arg: Any) -> Any:
    """The expression a ``$replaceRoot`` (its ``newRoot``) or ``$replaceWith`` makes
    each document from."""
    if name == "$replaceWith":
        return arg
    if not isinstance(arg, dict):
        raise invalid(
            f"expected an object as specification for $replaceRoot stage, got {type_name(arg)}",
            location=40229,
        )
    for key in arg:
        if key != "newRoot":
            raise invalid(
                f"unrecognized option to $replaceRoot stage: {key}, only valid option is "
                "'newRoot'.",
                location=40230,
            )
    if "newRoot" not in arg:
        raise invalid("no newRoot specified for the $replaceRoot stage", location=40231)
    return arg["newRoot"]


def new_root(name: str, root: Any, document: Any) -> dict[str, Any]:
    """``root``, what the expression made of ``document``, when it is a document (40228
    else)."""
    if isinstance(root, dict):
        return root
    # mongod's words, the two spaces after $replaceRoot's "expression" included
    what = "'newRoot' expression " if name == "$replaceRoot" else "'replacement document'"
    raise invalid(
        f"{what} must evaluate to an object, but resulting value was: {shown(root)}. "
        f"Type of resulting value: '{type_name(root)}'. Input document: {shown(document)}",
        location=40228,
    )


def documents(arg: Any, variables: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """What a leading ``$documents`` gives: its expression, evaluated with no current
    document (``variables``: a ``$lookup``'s ``let``), must be an array of documents."""
    found = evaluate(arg, {}, variables)
    if not isinstance(found, list):
        raise invalid(
            f"$documents expects an array of objects, found {type_name(found)}", location=5858203
        )
    return [new_root("$replaceRoot", item, {}) for item in found]


def leading_documents(stages: Any) -> Any:
    """The argument of ``stages``' leading ``$documents`` (a sub-pipeline's), MISSING
    when it has none."""
    if isinstance(stages, list) and stages and isinstance(stages[0], dict):
        return stages[0].get("$documents", MISSING) if len(stages[0]) == 1 else MISSING
    return MISSING


def check(stages: list[dict[str, Any]]) -> None:
    """The arguments of every stage of ``stages`` that this module reads, in order."""
    for stage in stages:
        if not isinstance(stage, dict) or len(stage) != 1:
            continue  # pipeline.stage_name answers that one where the stage runs
        ((name, arg),) = stage.items()
        if name in _COUNT_CODES:
            count(name, arg)
        elif name == "$sample":
            sample_size(arg)
        elif name == "$unwind":
            unwind(arg)
        elif name in ("$replaceRoot", "$replaceWith"):
            new_root_expression(name, arg)
