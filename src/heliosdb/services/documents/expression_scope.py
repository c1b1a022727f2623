"""What an aggregation operator's implementation sees: a scope that evaluates its
operands (the document and the variables in effect), and MongoDB's value rules that
every operator family shares (nullish operands, truthiness, numbers)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from bson.decimal128 import Decimal128

from heliosdb.errors import invalid
from heliosdb.services.documents.values import MISSING, type_rank


class Scope(Protocol):
    def __call__(self, expr: Any) -> Any:
        """The value of ``expr`` here (MISSING where a path reaches nothing)."""

    def args(self, arg: Any) -> list[Any]:
        """An operator's operands: a list evaluated item by item, or one operand."""

    def bind(self, names: dict[str, Any]) -> Scope:
        """This scope with the variables ``names`` added (``$$name``)."""


# An operator: its argument as written, and the scope to evaluate operands in.
Operator = Callable[[Any, Scope], Any]


def present(value: Any) -> Any:
    """``value``, or null for a path that reached nothing (MISSING)."""
    return None if value is MISSING else value


def nullish(value: Any) -> bool:
    """null or missing: most operators answer null for such an operand."""
    return value is None or value is MISSING


def truthy(value: Any) -> bool:
    if value is None or value is MISSING or value is False:
        return False
    return not (is_number(value) and number(value) == 0)


def is_number(value: Any) -> bool:
    return type_rank(value) == 3


def number(value: Any) -> Any:
    """A BSON number as a Python int, float or Decimal."""
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return value


def operands(name: str, values: list[Any], low: int, high: int | None = None) -> list[Any]:
    """``values``, checked to number between ``low`` and ``high`` (MongoDB's message)."""
    top = low if high is None else high
    if not low <= len(values) <= top:
        expected = f"{low}" if top == low else f"between {low} and {top}"
        raise invalid(
            f"Expression {name} takes {expected} arguments. {len(values)} were passed in.",
            kind="bad_value",
        )
    return values


def spec(name: str, arg: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Any:
    """An operator's argument document, its fields checked as MongoDB checks them."""
    if not isinstance(arg, dict):
        raise invalid(f"{name} expects an object as its argument", kind="failed_to_parse")
    for field in arg:
        if field not in required and field not in optional:
            raise invalid(f"Unrecognized parameter to {name}: {field}", kind="failed_to_parse")
    for field in required:
        if field not in arg:
            raise invalid(f"Missing '{field}' parameter to {name}", kind="failed_to_parse")
    return arg


def decimal_safe(value: Any) -> Any:
    """A float, int or Decimal operand for math that mixes them."""
    value = number(value)
    return float(value) if isinstance(value, Decimal) else value
