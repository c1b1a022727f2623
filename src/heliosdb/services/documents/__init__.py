"""Documents: MongoDB's data model (databases, collections, BSON documents) in the engine.

store.py        DocumentStore, the service interfaces call
catalog.py      names, engine tables and indexes, the helios_documents catalog
keytables.py    unique indexes enforced by key tables (MongoDB's multikey keys)
bsonform.py     exact BSON bytes and the JSONB query form beside them
filters.py      query filters and sorts compiled to SQL
lookups.py      concurrent finds by _id batched into one statement
matcher.py      the same filters evaluated in Python on fetched documents
updates.py      update operators
projection.py   find() projections
pipeline.py     aggregation stages in Python; pushdown.py the part that runs as SQL
expressions.py  aggregation expressions
values.py       BSON comparison order and dotted paths
views.py        read-only views: their catalog and the pipeline each resolves to
merges.py       $merge and $out into a collection
explained.py    the engine's plans in MongoDB's explain shape (reads and writes)
"""

from heliosdb.services.documents.catalog import IndexSpec
from heliosdb.services.documents.store import (
    DocumentStore,
    FindQuery,
    InsertResult,
    UpdateResult,
    WriteError,
)

__all__ = ["DocumentStore", "FindQuery", "IndexSpec", "InsertResult", "UpdateResult", "WriteError"]
