"""keytables: what a duplicate key's engine detail says, and the DDL's shape."""

from __future__ import annotations

from bson import ObjectId

from heliosdb.services.documents import keytables
from heliosdb.services.documents.catalog import IndexSpec

UNIQUE = IndexSpec("a_1_b_1", {"a": 1, "b.c": 1}, {"unique": True}, "hx_1")


def test_key_value_shows_the_documents_values() -> None:
    oid = ObjectId()
    document = {"a": [1, {"x": 1, "y": 2}], "b": [{"c": oid}]}
    detail = (
        f'Key (key, ord)=([{{"x": 1, "y": 2}}, {{"$oid": "{oid}"}}], \\x78007900) already exists.'
    )
    assert keytables.key_value(UNIQUE, document, detail) == {"a": {"x": 1, "y": 2}, "b.c": oid}


def test_key_value_without_the_document() -> None:
    detail = 'Key (key, ord)=([2, {"$undefined": true}], \\x) is duplicated.'
    assert keytables.key_value(UNIQUE, {}, detail) == {"a": 2, "b.c": None}
    assert keytables.key_value(UNIQUE, {}, None) == {"a": None, "b.c": None}


def test_constraint_names_the_index() -> None:
    plain = IndexSpec("a_1", {"a": 1}, {}, "hx_2")
    assert keytables.spec_for([plain, UNIQUE], "hx_1_u") is UNIQUE
    assert keytables.spec_for([plain, UNIQUE], "hx_2_u") is None
    assert keytables.drop_ddl(plain) == []


def test_updates_of_other_fields_call_no_function() -> None:
    statements = keytables.create_ddl("db", "coll", UNIQUE)
    (update,) = [s for s in statements if "AFTER UPDATE" in s]
    assert "WHEN (OLD._id IS DISTINCT FROM NEW._id OR (OLD.doc -> 'a') IS DISTINCT FROM" in update
    assert "(OLD.doc -> 'b') IS DISTINCT FROM (NEW.doc -> 'b')" in update
