"""Read-only views (MongoDB's non-materialized views): a name, the collection or view it
reads (``viewOn``) and a pipeline, kept in the catalog table ``helios_documents.views``.

A view has no table. Reading it runs its pipeline over its source: a view on a view
puts the inner view's pipeline first (``resolve``), so every read is one aggregate over
one collection, on the reader's own engine connection (a read-only key reads a view
exactly where it may read the collection under it). A find, count or distinct on a
view becomes that aggregate with the command's filter, sort, skip, limit and projection
as stages after the view's (``find_stages``, ``count_stages``), as MongoDB runs them.

A view and a collection never share a name: both are created under the same advisory
lock (catalog.create_collection), and each refuses the other's name.
"""

# ruff: noqa: S608 - SQL here is composed from the catalog's fixed names; every value is a
# bind parameter.

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from heliosdb.errors import ErrorCode, HeliosError, invalid
from heliosdb.services.documents import bsonform
from heliosdb.services.documents.catalog import CATALOG_SCHEMA as SCHEMA
from heliosdb.services.documents.catalog import check_collection_name

DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.views (
    db text NOT NULL,
    name text NOT NULL,
    view_on text NOT NULL,
    pipeline bytea NOT NULL,
    PRIMARY KEY (db, name)
);
"""
# MongoDB's limit on views over views (ViewDepthLimitExceeded past it)
MAX_DEPTH = 20
# stages a view's pipeline may not hold: they write, or need a replica set
_REFUSED_STAGES = ("$out", "$merge", "$changeStream")

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class View:
    """A view as stored: what it reads and its own pipeline."""

    db: str
    name: str
    view_on: str
    pipeline: list[Document]

    def describe(self) -> Document:
        """The ``options`` listCollections shows for it."""
        return {"viewOn": self.view_on, "pipeline": self.pipeline}


@dataclass(frozen=True, slots=True)
class Resolved:
    """A view read as what it is: a pipeline over one collection (``source``)."""

    db: str
    name: str
    source: str
    pipeline: list[Document]


def not_on_view(db: str, name: str) -> HeliosError:
    """What a write, an index or any other operation a view cannot take answers."""
    return invalid(
        f"Namespace {db}.{name} is a view, not a collection",
        kind="command_not_supported_on_view",
    )


def check_definition(view_on: Any, stages: Any) -> list[Document]:
    """The pipeline of a view definition, checked as MongoDB's ``create`` checks it."""
    if not isinstance(view_on, str):
        raise invalid(
            f"BSON field 'create.viewOn' is the wrong type '{type(view_on).__name__}', "
            "expected type 'string'",
            kind="type_mismatch",
        )
    if not view_on:
        raise invalid("'viewOn' cannot be empty", kind="bad_value")
    if stages is None:
        return []
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise invalid(
            "BSON field 'create.pipeline' is the wrong type, expected type 'array'",
            kind="type_mismatch",
        )
    for stage in stages:
        name = next(iter(stage), "")
        if len(stage) != 1:
            raise invalid(
                "A pipeline stage specification object must contain exactly one field.",
                kind="failed_to_parse",
            )
        if name in _REFUSED_STAGES:
            raise invalid(
                f"{name} cannot be used in a view definition", kind="option_not_supported_on_view"
            )
    return stages


async def fetch(conn: asyncpg.Connection, db: str, name: str) -> View | None:
    row = await conn.fetchrow(
        f"SELECT view_on, pipeline FROM {SCHEMA}.views WHERE db = $1 AND name = $2", db, name
    )
    if row is None:
        return None
    return View(db, name, row["view_on"], list(bsonform.decode(row["pipeline"])["p"]))


async def listed(conn: asyncpg.Connection, db: str) -> list[View]:
    rows = await conn.fetch(
        f"SELECT name, view_on, pipeline FROM {SCHEMA}.views WHERE db = $1 ORDER BY name", db
    )
    return [
        View(db, r["name"], r["view_on"], list(bsonform.decode(r["pipeline"])["p"])) for r in rows
    ]


async def resolve(conn: asyncpg.Connection, db: str, name: str) -> Resolved | None:
    """The view ``name`` as a pipeline over a collection (None: it is no view). A source
    that does not exist is an empty collection, as in MongoDB."""
    view = await fetch(conn, db, name)
    if view is None:
        return None
    stages = list(view.pipeline)
    source = view.view_on
    for _ in range(MAX_DEPTH):
        inner = await fetch(conn, db, source)
        if inner is None:
            return Resolved(db, name, source, stages)
        stages = [*inner.pipeline, *stages]
        source = inner.view_on
    raise _too_deep()


def _too_deep() -> HeliosError:
    return invalid(
        f"View depth too deep or view cycle detected; maximum depth is {MAX_DEPTH}",
        kind="view_depth_limit_exceeded",
    )


async def _check_chain(conn: asyncpg.Connection, db: str, name: str, view_on: str) -> None:
    """Refuse a definition of ``name`` on ``view_on`` that would make a cycle or a chain
    deeper than MongoDB allows."""
    source = view_on
    for _ in range(MAX_DEPTH):
        if source == name:
            raise invalid(
                f"View cycle detected: {db}.{name} reads itself through {db}.{view_on}",
                kind="graph_contains_cycle",
            )
        inner = await fetch(conn, db, source)
        if inner is None:
            return
        source = inner.view_on
    raise _too_deep()


async def _lock(conn: asyncpg.Connection, db: str, name: str) -> None:
    # the lock catalog.create_collection takes for the same name
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))", f"helios_documents:{db}.{name}"
    )


async def create(conn: asyncpg.Connection, db: str, name: str, view_on: Any, stages: Any) -> None:
    """Record a view (inside the caller's transaction); a name taken answers 48."""
    await _lock(conn, db, name)
    taken = await conn.fetchval(
        f"SELECT 1 FROM {SCHEMA}.collections WHERE db = $1 AND name = $2 "
        f"UNION ALL SELECT 1 FROM {SCHEMA}.views WHERE db = $1 AND name = $2",
        db,
        name,
    )
    if taken:
        raise HeliosError(
            ErrorCode.ALREADY_EXISTS,
            f"Namespace {db}.{name} already exists",
            kind="namespace_exists",
        )
    await _record(conn, db, name, view_on, stages)


async def _record(conn: asyncpg.Connection, db: str, name: str, view_on: Any, stages: Any) -> None:
    """Write the definition, checked, a cycle refused (a new view or a changed one)."""
    checked = check_definition(view_on, stages)
    check_collection_name(view_on)
    await _check_chain(conn, db, name, view_on)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.views (db, name, view_on, pipeline) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (db, name) DO UPDATE SET view_on = excluded.view_on, "
        "pipeline = excluded.pipeline",
        db,
        name,
        view_on,
        bsonform.encode({"p": checked}),
    )


async def modify(conn: asyncpg.Connection, db: str, name: str, view_on: Any, stages: Any) -> bool:
    """Change a view's definition (collMod; None keeps that part); False when ``name``
    is no view."""
    await _lock(conn, db, name)
    view = await fetch(conn, db, name)
    if view is None:
        return False
    await _record(
        conn,
        db,
        name,
        view.view_on if view_on is None else view_on,
        view.pipeline if stages is None else stages,
    )
    return True


async def drop(conn: asyncpg.Connection, db: str, name: str) -> bool:
    """Forget a view; False when there was none."""
    dropped = await conn.fetchval(
        f"DELETE FROM {SCHEMA}.views WHERE db = $1 AND name = $2 RETURNING 1", db, name
    )
    return bool(dropped)


async def is_view(conn: asyncpg.Connection, db: str, name: str) -> bool:
    found = await conn.fetchval(
        f"SELECT 1 FROM {SCHEMA}.views WHERE db = $1 AND name = $2", db, name
    )
    return bool(found)


# -- reads of a view as one aggregate ---------------------------------------------------------
def find_stages(
    view: Resolved,
    query: Document | None,
    sort: Document | None,
    skip: int,
    limit: int,
    projection: Document | None,
) -> list[Document]:
    """The view's pipeline and a find's filter, sort, skip, limit and projection after it."""
    stages = list(view.pipeline)
    if query:
        stages.append({"$match": query})
    if sort:
        stages.append({"$sort": sort})
    if skip:
        stages.append({"$skip": skip})
    if limit:
        stages.append({"$limit": limit})
    if projection:
        stages.append({"$project": projection})
    return stages


def count_stages(view: Resolved, query: Document | None, skip: int, limit: int) -> list[Document]:
    """The stages whose one document ``{n}`` (or none: 0) is a count's answer."""
    return [*find_stages(view, query, None, skip, abs(limit), None), {"$count": "n"}]
