"""Identifier quoting: the one way a name given by a user reaches SQL text.

Values never reach SQL text at all: they are always bind parameters. Names cannot be
parameters, so they pass through :func:`quote_ident`, which quotes exactly as
PostgreSQL's ``quote_ident()`` does for a name that needs quoting. Callers check names
against the catalog first; quoting is what makes a forgotten check harmless.
"""

from __future__ import annotations

from heliosdb.errors import invalid

MAX_IDENTIFIER_BYTES = 63


def quote_ident(name: str) -> str:
    if not name or "\x00" in name:
        raise invalid("identifiers must be non-empty and contain no NUL byte")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise invalid(f"identifier longer than {MAX_IDENTIFIER_BYTES} bytes: {name[:70]!r}")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def quote_literal(text: str) -> str:
    """A string constant for the few statements that take no parameters (DDL such as
    index expressions over JSONB keys), quoted as PostgreSQL's ``quote_literal()`` does:
    with a backslash present it uses the E'' form, right whatever
    ``standard_conforming_strings`` says."""
    if "\x00" in text:
        raise invalid("text must contain no NUL byte")
    quoted = "'" + text.replace("'", "''").replace("\\", "\\\\") + "'"
    return "E" + quoted if "\\" in text else quoted
