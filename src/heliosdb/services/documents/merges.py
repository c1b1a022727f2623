"""``$merge`` and ``$out``: an aggregate's results written into a collection.

``$merge`` (``merge``) takes each result document in turn, finds the target document
with the same ``on`` fields (``_id`` unless told; other fields need a unique index on
exactly them, as MongoDB requires, so at most one matches), and replaces, merges,
keeps, updates through a pipeline or fails (``whenMatched``), or inserts, discards or
fails (``whenNotMatched``). Every write of one ``$merge`` runs in one engine
transaction: a failure midway writes nothing (MongoDB keeps the writes before it; all
or nothing is within what it promises).

``$out`` (``replace``) empties the target and inserts the results in one engine
transaction: readers see the old documents until it commits and the new ones after,
never a part; the target's table stays, so its indexes and options stay as MongoDB
keeps them; a failure (a duplicate key of a unique index, say) leaves it as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bson.objectid import ObjectId

from heliosdb.errors import ErrorCode, HeliosError, invalid
from heliosdb.security.principals import Principal
from heliosdb.services.documents import bsonform, catalog, transactions, variables, views
from heliosdb.services.documents.expressions import evaluate
from heliosdb.services.documents.store import (
    DocumentStore,
    as_document,
    check_update_pipeline,
    pipeline_update,
    read_only_denied,
)
from heliosdb.services.documents.values import MISSING, equal, get_path, hashable

Document = dict[str, Any]
WHEN_MATCHED = ("replace", "keepExisting", "merge", "fail")
WHEN_NOT_MATCHED = ("insert", "discard", "fail")
_FIELDS = ("into", "on", "let", "whenMatched", "whenNotMatched", "targetCollectionVersion")


@dataclass(slots=True)
class MergeSpec:
    """A parsed ``$merge`` stage."""

    db: str
    coll: str
    on: list[str] = field(default_factory=lambda: ["_id"])
    when_matched: str | list[Document] = "merge"
    when_not_matched: str = "insert"
    let: Document | None = None


def _bad(message: str, kind: str = "failed_to_parse") -> HeliosError:
    return invalid(message, kind=kind)


def target_of(into: Any, db: str, stage: str) -> tuple[str, str]:
    """``into`` (``$merge``) or the ``$out`` argument: a name, or ``{db, coll}``."""
    if isinstance(into, str):
        return db, into
    if isinstance(into, dict) and isinstance(into.get("coll"), str):
        other = into.get("db", db)
        if not isinstance(other, str):
            raise _bad(f"{stage} 'db' must be a string", "type_mismatch")
        return other, into["coll"]
    raise _bad(
        f"{stage} 'into' must be a collection name or an object with 'db' and 'coll'",
        "type_mismatch",
    )


def parse(stage: Any, db: str) -> MergeSpec:
    """A ``$merge`` stage's argument, checked as MongoDB checks it."""
    if isinstance(stage, str):
        return MergeSpec(db, stage)
    if not isinstance(stage, dict):
        raise _bad("$merge requires a string or object argument", "type_mismatch")
    for name in stage:
        if name not in _FIELDS:
            raise _bad(f"BSON field '$merge.{name}' is an unknown field.", "unknown_field")
    if "into" not in stage:
        raise _bad("BSON field '$merge.into' is missing but a required field", "missing_field")
    spec = MergeSpec(*target_of(stage["into"], db, "$merge"))
    on = stage.get("on", "_id")
    on_list = [on] if isinstance(on, str) else on
    if (
        not isinstance(on_list, list)
        or not on_list
        or not all(isinstance(p, str) and p for p in on_list)
    ):
        raise _bad(
            "$merge 'on' field must be either a string or an array of strings", "type_mismatch"
        )
    if len(set(on_list)) != len(on_list):
        raise _bad("Found a duplicate field in the $merge 'on' list", "bad_value")
    spec.on = list(on_list)
    matched = stage.get("whenMatched", "merge")
    if isinstance(matched, list):
        if not all(isinstance(s, dict) for s in matched):
            raise _bad("$merge 'whenMatched' pipeline stages must be objects", "type_mismatch")
    elif matched not in WHEN_MATCHED:
        raise _bad(
            f"Enumeration value '{matched}' for field '$merge.whenMatched' is not a valid value.",
            "bad_value",
        )
    spec.when_matched = matched
    not_matched = stage.get("whenNotMatched", "insert")
    if not_matched not in WHEN_NOT_MATCHED:
        raise _bad(
            f"Enumeration value '{not_matched}' for field '$merge.whenNotMatched' is not a "
            "valid value.",
            "bad_value",
        )
    spec.when_not_matched = not_matched
    let = stage.get("let")
    if let is not None:
        if not isinstance(let, dict):
            raise _bad("$merge 'let' must be an object", "type_mismatch")
        if not isinstance(matched, list):
            raise _bad(
                f"Cannot use 'let' variables with 'whenMatched: {matched}' mode", "let_not_allowed"
            )
        spec.let = let
    catalog.check_db_name(spec.db)
    catalog.check_collection_name(spec.coll)
    return spec


def key_of(document: Document, on: list[str]) -> Document:
    """The ``on`` fields' values of a result document: the filter of its match."""
    key: Document = {}
    for path in on:
        value = get_path(document, path)
        if value is MISSING or value is None:
            raise _bad(
                f"$merge write error: 'on' field '{path}' cannot be missing, null, undefined "
                "or an array",
                "merge_on_field_missing",
            )
        if isinstance(value, list):
            raise _bad(
                f"$merge write error: 'on' field '{path}' cannot be missing, null, undefined "
                "or an array",
                "merge_on_field_array",
            )
        key[path] = {"$eq": value}
    return key


def _kept_id(existing: Document, new: Document) -> Document:
    """``new`` with the matched document's ``_id``, which it may not change."""
    if "_id" in new and not equal(new["_id"], existing["_id"]):
        raise _bad(
            "$merge failed to update the matching document, did you attempt to modify the _id "
            "or the shard key?",
            "immutable_field",
        )
    return {k: v for k, v in new.items() if k != "_id"}


def matched_update(spec: MergeSpec, existing: Document, new: Document) -> Any:
    """The update (a replacement or an update pipeline) of a matched document; None:
    keep it as it is."""
    how = spec.when_matched
    if how == "keepExisting":
        return None
    if how == "fail":
        shown = ", ".join(f"{p}: {get_path(new, p)!r}" for p in spec.on)
        raise HeliosError(
            ErrorCode.CONFLICT,
            f"E11000 duplicate key error collection: {spec.db}.{spec.coll} dup key: {{ {shown} }}",
            kind="duplicate_key",
        )
    if how == "replace":
        return _kept_id(existing, new)
    if how == "merge":
        merged = {k: v for k, v in existing.items() if k != "_id"}
        merged.update(_kept_id(existing, new))
        return merged
    assert isinstance(how, list)
    names: Document = {"new": new}
    for name, expr in (spec.let or {}).items():
        value = evaluate(expr, new)
        names[name] = None if value is MISSING else value
    return variables.pipeline(how, names)


async def merge(
    store: DocumentStore, principal: Principal, spec: MergeSpec, documents: list[Any]
) -> None:
    """Write ``documents`` (the pipeline's results) into the target as ``spec`` says: a
    batch of them at a time, whose matches one statement reads and whose replacements
    and inserts one statement each writes. A result whose ``on`` key an earlier one of
    the batch has starts the next batch, so it meets what that one wrote."""
    await _check_target(store, principal, spec.db, spec.coll)
    if spec.on != ["_id"] and not await _unique_on(store, principal, spec):
        raise _bad(
            "Cannot find index to verify that join fields will be unique",
            "merge_no_unique_index",
        )
    async with _transaction(store, principal):
        batch: dict[Any, Document] = {}
        for item in documents:
            new = as_document(item)
            if "_id" not in new and "_id" in spec.on:
                new = {"_id": ObjectId(), **new}
            key_of(new, spec.on)  # refuses a missing, null or array value
            key = _hashed(new, spec.on)
            if key in batch or len(batch) >= MERGE_BATCH:
                await _merge_batch(store, principal, spec, batch)
                batch = {}
            batch[key] = new
        if batch:
            await _merge_batch(store, principal, spec, batch)


# results whose matches are read (by _id in one statement) and written together
MERGE_BATCH = 1000
# results whose matches on other fields than _id one statement reads
MERGE_READ = 32


def _hashed(document: Document, on: list[str]) -> Any:
    """The ``on`` key of a document, to find its match by (MongoDB's equality)."""
    return tuple(hashable(get_path(document, path)) for path in on)


async def _merge_batch(
    store: DocumentStore, principal: Principal, spec: MergeSpec, batch: dict[Any, Document]
) -> None:
    news = list(batch.values())
    found: list[tuple[Document, int]] = []
    # by the first ``on`` field (its unique index leads with it), the rest checked here;
    # _id in one statement; another field in small ones: the engine checks its values
    # one by one against each candidate (a jsonpath branch each)
    first = spec.on[0]
    step = MERGE_BATCH if first == "_id" else MERGE_READ
    for start in range(0, len(news), step):
        values = [get_path(new, first) for new in news[start : start + step]]
        query: Document = {first: {"$in": values}}
        found += await store.read_versions(principal, spec.db, spec.coll, query)
    matched = {_hashed(old, spec.on): (old, version) for old, version in found}
    inserts: list[bytes] = []
    replaced: list[tuple[Document, int]] = []
    for key, new in batch.items():
        match = matched.get(key)
        if match is None:
            if spec.when_not_matched == "fail":
                raise _bad(
                    "$merge could not find a matching document in the target collection for "
                    "at least one document in the source collection",
                    "merge_no_match",
                )
            if spec.when_not_matched == "insert":
                inserts.append(bsonform.encode(new))
            continue
        old, version = match
        update = matched_update(spec, old, new)
        if isinstance(update, list):
            check_update_pipeline(update)
            replaced.append((await pipeline_update(old, update), version))
        elif update is not None:
            replaced.append(({"_id": old["_id"], **update}, version))
    if replaced:
        await store.write_versions(principal, spec.db, spec.coll, replaced)
    if inserts:
        result = await store.insert(principal, spec.db, spec.coll, inserts)
        if result.errors:
            raise result.errors[0].error


async def replace(
    store: DocumentStore, principal: Principal, db: str, coll: str, documents: list[Any]
) -> None:
    """``$out``: the collection holds exactly ``documents`` after one engine transaction
    (created if missing, its indexes and options kept if not)."""
    await _check_target(store, principal, db, coll)
    raws = [d if isinstance(d, bytes) else bsonform.encode(d) for d in documents]
    async with _transaction(store, principal) as txn:
        await store.empty_collection(txn.conn, db, coll)
        if raws:
            result = await store.insert(principal, db, coll, raws)
            if result.errors:
                raise result.errors[0].error


async def _check_target(store: DocumentStore, principal: Principal, db: str, coll: str) -> None:
    catalog.check_db_name(db)
    catalog.check_collection_name(coll)
    if principal.read_only:
        raise denied_write()
    if await store.view(principal, db, coll) is not None:
        raise views.not_on_view(db, coll)


def denied_write() -> HeliosError:
    return read_only_denied("write the results of $out or $merge")


async def _unique_on(store: DocumentStore, principal: Principal, spec: MergeSpec) -> bool:
    """Whether the target has a unique index on exactly the ``on`` fields."""
    try:
        indexes = await store.list_indexes(principal, spec.db, spec.coll)
    except HeliosError:
        return False  # no collection: no index
    wanted = set(spec.on)
    return any(i.get("unique") and set(i["key"]) == wanted for i in indexes)


@contextlib.asynccontextmanager
async def _transaction(
    store: DocumentStore, principal: Principal
) -> AsyncIterator[transactions.DocumentTransaction]:
    """One engine transaction for the writes of an ``$out`` or ``$merge``, every store
    call of this task inside it; committed at the end, rolled back on any error. Not
    inside a client's transaction, as in MongoDB."""
    if transactions.current() is not None:
        raise _bad(
            "$out and $merge cannot be used in a multi-document transaction",
            "operation_not_supported_in_transaction",
        )
    txn = await store.begin(principal)
    try:
        with transactions.using(txn):
            yield txn
    except BaseException:
        await txn.rollback()
        raise
    await txn.commit()
