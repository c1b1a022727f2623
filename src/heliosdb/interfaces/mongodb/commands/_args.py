"""Argument parsing shared by the command modules: one place for the protocol's
type errors."""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.mongodb.connection import Request
from heliosdb.interfaces.mongodb.errors import CommandError


def collection(request: Request) -> str:
    name = request.body.get(request.name)
    if not isinstance(name, str) or not name:
        raise CommandError(
            73,
            f"collection name has invalid type {type(name).__name__}"
            if not isinstance(name, str)
            else "Invalid namespace specified",
        )
    return name


def document(request: Request, key: str, default: Any = None) -> Any:
    value = request.body.get(key, default)
    if value is not None and not isinstance(value, dict):
        raise CommandError(
            14,
            f"BSON field '{request.name}.{key}' is the wrong type "
            f"'{type(value).__name__}', expected type 'object'",
        )
    return value


def integer(request: Request, key: str, default: int = 0) -> int:
    value = request.body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError(
            14,
            f"BSON field '{request.name}.{key}' is the wrong type "
            f"'{type(value).__name__}', expected types '[long, int, decimal, "
            "double']",
        )
    if isinstance(value, float) and not value.is_integer():
        raise CommandError(2, f"{key} must be a whole number")
    return int(value)


def array(request: Request, key: str) -> list[Any]:
    """A list from the body, or from a document sequence of that name (raw BSON)."""
    if key in request.sequences:
        from heliosdb.services.documents import bsonform

        return [bsonform.decode(raw) for raw in request.sequences[key]]
    value = request.body.get(key)
    if not isinstance(value, list):
        raise CommandError(
            14 if value is not None else 40414,
            f"BSON field '{request.name}.{key}' is missing but a required field"
            if value is None
            else f"BSON field '{request.name}.{key}' is the wrong type",
        )
    return value


def simple_collation(value: Any, where: str) -> None:
    """Refuse a collation other than ``{locale: "simple"}``: strings here compare by code
    point (MongoDB's simple collation), so a locale's rules (case or accent folding)
    would be silently ignored and a filter would match other documents than asked."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise CommandError(
            14,
            f"BSON field '{where}.collation' is the wrong type "
            f"'{type(value).__name__}', expected type 'object'",
        )
    locale = value.get("locale")
    if locale != "simple" or len(value) > 1:
        raise CommandError(
            238,
            f"collation {{locale: {locale!r}}} is not supported: strings compare by code "
            "point, as with {locale: 'simple'}",
        )
