"""A read-write key on the PostgreSQL port cannot make the engine superuser run its code.

The node puts a few functions in the engine that run with more privilege than the role
whose statement fires them (docs/architecture.md, Privileges): ``helios.capture_ddl``
(SECURITY DEFINER, fired by any role's CREATE SCHEMA/TABLE) and the documents catalog's
``helios.documents_drops`` (fired by any role's DROP), and the node's own sessions run as
the engine superuser. Each test plants what an attacker would, with psql-level access as
``helios_readwrite``: a function that records ``current_user`` whenever it runs, reached
through a temp type or relation, a better-fitting function in ``public``, or the
catalog's own function replaced. Then it checks the superuser never ran it and the
engine did what it does for everyone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from heliosdb.services.documents import catalog
from tests.integration.mongodb.conftest import connect
from tests.integration.postgres.conftest import make_dsn
from tests.nodeproc import NodeProcess

RW = "helios_readwrite"
# A function the attacker's objects call: it records who it runs as (in a table every
# role may write) and answers true, so the statement that reached it goes on.
RECORDER = """
CREATE FUNCTION {schema}.record_caller(anyelement) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.{seen} (who) VALUES (current_user);
    RETURN true;
END $$
"""


@pytest.fixture
def rw_dsn(node: NodeProcess, rw_key: str) -> str:
    return make_dsn(node.ports["postgres"], rw_key)


@pytest.fixture
def seen(rw_dsn: str) -> Iterator[str]:
    """A table the planted functions write who they ran as into."""
    name = f"seen_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(rw_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE public.{} (who name)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT INSERT ON public.{} TO PUBLIC").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(rw_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(name)))


def _callers(rw_dsn: str, seen: str) -> set[str]:
    with psycopg.connect(rw_dsn) as conn:
        rows = conn.execute(sql.SQL("SELECT who FROM public.{}").format(sql.Identifier(seen)))
        return {who for (who,) in rows}


def _superuser(node: NodeProcess) -> str:
    with psycopg.connect(node.engine_url) as conn:
        row = conn.execute("SELECT current_user").fetchone()
        assert row is not None
        return str(row[0])


def _after_planting(rw_dsn: str, seen: str, plant: str, kind: str, name: str, look: str) -> object:
    """In one read-write session: the recorder and ``plant`` in pg_temp, then CREATE
    ``kind`` ``name``; what ``look`` (a query of ``name``) answers before it is dropped."""
    with psycopg.connect(rw_dsn, autocommit=True) as conn:
        conn.execute(RECORDER.format(schema="pg_temp", seen=seen))
        conn.execute(plant)
        columns = sql.SQL(" (a int)" if kind == "TABLE" else "")
        conn.execute(sql.SQL("CREATE {} {}{}").format(sql.SQL(kind), sql.Identifier(name), columns))
        row = conn.execute(look, (name,)).fetchone()
        conn.execute(sql.SQL("DROP {} {}").format(sql.SQL(kind), sql.Identifier(name)))
    return row


def test_capture_ddl_does_not_take_a_temp_regclass_type(
    node: NodeProcess, rw_dsn: str, seen: str
) -> None:
    """CREATE TABLE fires capture_ddl, which casts the new table's oid to regclass: a temp
    domain named regclass (whose CHECK calls the caller's function) is not that type."""
    identity = _after_planting(
        rw_dsn,
        seen,
        "CREATE DOMAIN pg_temp.regclass AS pg_catalog.regclass "
        "CHECK (pg_temp.record_caller(VALUE))",
        "TABLE",
        f"victim_{uuid.uuid4().hex[:8]}",
        "SELECT relreplident FROM pg_class WHERE oid = to_regclass(%s)",
    )
    assert _superuser(node) not in _callers(rw_dsn, seen)
    assert identity == ("f",)  # REPLICA IDENTITY FULL, as for every new table


def test_capture_ddl_does_not_read_a_temp_pg_namespace(
    node: NodeProcess, rw_dsn: str, seen: str
) -> None:
    """CREATE SCHEMA fires capture_ddl, which reads the schema's name: a temp view named
    pg_namespace (calling the caller's function) is not the catalog."""
    published = _after_planting(
        rw_dsn,
        seen,
        "CREATE TEMP VIEW pg_namespace AS SELECT n.oid, n.nspname FROM "
        "pg_catalog.pg_namespace n WHERE pg_temp.record_caller(n.oid)",
        "SCHEMA",
        f"atk_{uuid.uuid4().hex[:8]}",
        "SELECT count(*) FROM pg_catalog.pg_publication_namespace pn "
        "JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid WHERE n.nspname = %s",
    )
    assert _superuser(node) not in _callers(rw_dsn, seen)
    assert published == (1,)  # the new schema is captured, as every new schema is


# Names and kinds of table an attacker might hope the trigger's ALTER TABLE misreads.
CRAFTED = {
    "quotes": 'CREATE TABLE {s}."t""; ALTER ROLE helios_readwrite SUPERUSER; --" (a int)',
    "dots": 'CREATE TABLE {s}."public.t" (a int)',
    "partition": "CREATE TABLE {s}.parent (a int) PARTITION BY LIST (a); "
    "CREATE TABLE {s}.part PARTITION OF {s}.parent FOR VALUES IN (1)",
    "as-select": "CREATE TABLE {s}.copy AS SELECT pg_catalog.now() AS at",
    "temp": "CREATE TEMP TABLE scratch (a int); CREATE TABLE pg_temp.other (a int)",
}


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_capture_ddl_takes_crafted_names_as_names(
    node: NodeProcess, rw_dsn: str, kind: str
) -> None:
    """In a schema whose name is a statement of its own, tables named to break out of
    quoting or to look qualified, partitions and CREATE TABLE AS get REPLICA IDENTITY
    FULL and nothing else happens; temp tables are left alone."""
    schema = f'x"; ALTER ROLE helios_readwrite SUPERUSER; -- {uuid.uuid4().hex[:8]}'
    quoted = sql.Identifier(schema).as_string()
    with psycopg.connect(rw_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            conn.execute(CRAFTED[kind].format(s=quoted).encode())
            identities = conn.execute(
                "SELECT c.relname, c.relreplident FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND (n.nspname = %s OR n.oid = pg_my_temp_schema())",
                (schema,),
            ).fetchall()
            published = conn.execute(
                "SELECT count(*) FROM pg_catalog.pg_publication_namespace pn "
                "JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid WHERE n.nspname = %s",
                (schema,),
            ).fetchone()
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    with psycopg.connect(node.engine_url) as conn:
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (RW,)
        ).fetchone()
    assert superuser == (False,)
    assert published == (1,)
    assert identities
    expected = "d" if kind == "temp" else "f"
    assert {identity for _, identity in identities} == {expected}


def test_capture_ddl_leaves_tables_the_caller_did_not_create(
    node: NodeProcess, rw_dsn: str
) -> None:
    """CREATE TABLE IF NOT EXISTS naming another role's table creates nothing, so the
    trigger changes nothing of it."""
    table = f"theirs_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(node.engine_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE public.{} (a int)").format(sql.Identifier(table)))
        conn.execute(
            sql.SQL("ALTER TABLE public.{} REPLICA IDENTITY DEFAULT").format(sql.Identifier(table))
        )
    try:
        with psycopg.connect(rw_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS public.{} (a int)").format(
                    sql.Identifier(table)
                )
            )
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS public.{} AS SELECT 1 AS a").format(
                    sql.Identifier(table)
                )
            )
        with psycopg.connect(node.engine_url) as conn:
            identity = conn.execute(
                "SELECT relreplident FROM pg_class WHERE oid = to_regclass(%s)",
                (f"public.{table}",),
            ).fetchone()
        assert identity == ("d",)
    finally:
        with psycopg.connect(node.engine_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(table)))


def test_node_start_does_not_run_functions_planted_in_public(
    node: NodeProcess, rw_dsn: str, seen: str, tmp_path: Path
) -> None:
    """A node starting on the engine takes advisory locks as the superuser with
    pg_advisory_xact_lock(hashtext(...)); a public.pg_advisory_xact_lock(integer) fits
    that call better than the catalog's (bigint), and a schema named like the superuser
    comes first in a default search_path. Neither is called."""
    superuser = _superuser(node)
    planted = sql.SQL(
        "CREATE FUNCTION {schema}.pg_advisory_xact_lock(integer) RETURNS void "
        "LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.{seen} (who) VALUES (current_user); "
        "PERFORM pg_catalog.pg_advisory_xact_lock($1::bigint); END $$"
    )
    with psycopg.connect(rw_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(superuser)))
        for schema in ("public", superuser):
            conn.execute(planted.format(schema=sql.Identifier(schema), seen=sql.Identifier(seen)))
            conn.execute(
                sql.SQL(
                    "GRANT EXECUTE ON FUNCTION {}.pg_advisory_xact_lock(integer) TO PUBLIC"
                ).format(sql.Identifier(schema))
            )
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(sql.Identifier(superuser))
        )
    try:
        node.beside(tmp_path / "data").stop()
    finally:
        with psycopg.connect(rw_dsn, autocommit=True) as conn:
            conn.execute("DROP FUNCTION public.pg_advisory_xact_lock(integer)")
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(superuser)))
    assert superuser not in _callers(rw_dsn, seen)


def test_superuser_drop_does_not_run_the_catalogs_functions(
    node: NodeProcess, rw_key: str, rw_dsn: str, seen: str
) -> None:
    """helios.documents_drops runs as the dropping role and acts for the read-write role
    only: forget_collection belongs to that role, which may replace it, so the
    superuser's DROP TABLE of a collection never calls it."""
    db = f"sec_{uuid.uuid4().hex[:8]}"
    with connect(node.ports["mongodb"], rw_key) as client:
        client[db]["c"].insert_one({"_id": 1})
    replaced = (
        f"CREATE OR REPLACE FUNCTION {catalog.CATALOG_SCHEMA}.forget_collection(d text, c text) "
        "RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO public.{seen} (who) VALUES (current_user); END $$"
    )
    with psycopg.connect(rw_dsn, autocommit=True) as conn:
        conn.execute(replaced)
    try:
        with psycopg.connect(node.engine_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE {}.c").format(sql.Identifier(db)))
    finally:
        with psycopg.connect(rw_dsn, autocommit=True) as conn:
            conn.execute(catalog.FORGET_DDL)
            conn.execute(f"SELECT {catalog.CATALOG_SCHEMA}.forget_collection(%s, 'c')", (db,))
            conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(db)))
    assert _superuser(node) not in _callers(rw_dsn, seen)


def test_security_definer_functions_are_few_and_pinned(node: NodeProcess) -> None:
    """The node's only SECURITY DEFINER function is capture_ddl: its search_path puts
    pg_temp last, and PUBLIC may not execute it."""
    with psycopg.connect(node.engine_url) as conn:
        rows = conn.execute(
            "SELECT p.oid::regprocedure::text, p.proconfig, "
            "has_function_privilege(%s, p.oid, 'EXECUTE') "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.prosecdef AND n.nspname ~ '^helios(_|$)'",
            (RW,),
        ).fetchall()
    assert rows == [("helios.capture_ddl()", ["search_path=pg_catalog, pg_temp"], False)]
