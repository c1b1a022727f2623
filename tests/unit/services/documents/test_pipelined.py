"""services/documents/pipelined.py's loop steps: finds by ``_id`` started in one step go
out together, per principal, on pipelines fed engine bytes by hand (sans engine)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from heliosdb.engine.pipeline import Pipeline, Prepared
from heliosdb.engine.roles import Access
from heliosdb.security.principals import Principal, PrincipalKind
from heliosdb.services.documents.lookups import Batched, sized_sql
from heliosdb.services.documents.pipelined import JSONB, PipelinedFinds
from tests.unit.recording import RecordingTransport

TARGET = '"bench"."items"'
SQL = f"SELECT bson FROM {TARGET} WHERE _id = $1"
WRITER = Principal("key-rw", "rw", PrincipalKind.API_KEY, Access.READ_WRITE)
READER = Principal("key-ro", "ro", PrincipalKind.API_KEY, Access.READ_ONLY)


class _Engine:
    class settings:  # the attribute PipelinedFinds reads
        query_timeout = 30

    closers: list[Any] = []

    def session_settings(self) -> dict[str, str]:
        return {}


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _answer(documents: list[bytes]) -> bytes:
    """The engine's answer to a batch statement: (position, bson) per document."""
    rows = b"".join(
        _msg(b"D", struct.pack("!hiqi", 2, 8, i, len(doc)) + doc)
        for i, doc in enumerate(documents, 1)
    )
    return _msg(b"2") + rows + _msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"I")


def _finds() -> tuple[PipelinedFinds, dict[Principal, list[tuple[Pipeline, RecordingTransport]]]]:
    """PipelinedFinds with two open pipelines per principal, SQL learned and prepared."""
    finds = PipelinedFinds(_Engine())  # type: ignore[arg-type]
    finds.learn(SQL)
    loop = asyncio.get_running_loop()
    pipes: dict[Principal, list[tuple[Pipeline, RecordingTransport]]] = {}
    for principal in (WRITER, READER):
        for _ in range(2):
            pipeline = Pipeline(loop, 30.0, share_sync=True)
            transport = RecordingTransport()
            pipeline.connection_made(transport)
            pipeline._statements[SQL] = Prepared(b"one", (JSONB,), ("bson:17",))
            for size in (2, 4):
                sql = sized_sql(TARGET, size)
                pipeline._statements[sql] = Prepared(b"b%d" % size, (JSONB,) * size, ("i:20",))
            pipes.setdefault(principal, []).append((pipeline, transport))
        finds.pipelines._open[(principal.access, principal.id)] = [p for p, _ in pipes[principal]]
    return finds, pipes


async def test_a_steps_finds_ask_for_a_pipeline_once_and_share_a_statement() -> None:
    """The step's first find picks the pipeline; the others join it without asking the
    pipelines again (old code: once per find, and once more for the batch statement)."""
    finds, pipes = _finds()
    picked = 0
    pick = finds.pipelines.pick

    def counting(access: Access, owner: str) -> Pipeline | None:
        nonlocal picked
        picked += 1
        return pick(access, owner)

    finds.pipelines.pick = counting  # type: ignore[method-assign]
    got: dict[str, list[bytes] | None] = {}
    for key in ("d1", "d2", "d3"):
        done = lambda docs, k=key: got.__setitem__(k, docs)  # noqa: E731
        assert finds.start(WRITER, SQL, [key], done, Batched(TARGET))
    await asyncio.sleep(0)
    assert picked == 1
    written = [(p, t) for p, t in pipes[WRITER] if t.writes]
    assert len(written) == 1 and len(written[0][1].writes) == 1  # one statement, one write
    assert b"b4\0" in written[0][1].writes[0]  # the batch statement of four (one padding)
    written[0][0].data_received(_answer([b"doc1", b"doc2", b"doc3"]))
    assert got == {"d1": [b"doc1"], "d2": [b"doc2"], "d3": [b"doc3"]}
    assert finds.batches[False] == 1 and finds.batched[False] == 3


async def test_principals_finds_of_one_step_go_in_their_own_statements() -> None:
    """Two principals' finds by _id in one loop step: each principal's go together on
    its own pipeline (its access level's engine role), never in one statement."""
    finds, pipes = _finds()
    got: dict[tuple[str, str], list[bytes] | None] = {}
    for number, principal in enumerate((WRITER, READER, WRITER, READER)):
        key = (principal.id, f"d{number}")
        got[key] = None
        done = lambda docs, k=key: got.__setitem__(k, docs)  # noqa: E731
        assert finds.start(principal, SQL, [key[1]], done, Batched(TARGET))
    await asyncio.sleep(0)
    for principal in (WRITER, READER):
        written = [(p, t) for p, t in pipes[principal] if t.writes]
        assert len(written) == 1 and b"b2\0" in written[0][1].writes[0]
        written[0][0].data_received(_answer([b"a-" + principal.id.encode(), b"b"]))
    assert got == {
        ("key-rw", "d0"): [b"a-key-rw"],
        ("key-ro", "d1"): [b"a-key-ro"],
        ("key-rw", "d2"): [b"b"],
        ("key-ro", "d3"): [b"b"],
    }
