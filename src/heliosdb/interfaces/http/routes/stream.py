"""POST /query/stream: a statement's rows as NDJSON, read from an engine cursor.

    {"columns": [{"name": "id", "type": "int4"}, ...]}      header
    [1, "Alice"]                                            one line per row
    {"metrics": {"rows_returned": 2, "execution_time_ms": 3.2}}   trailer
    {"error": {"code": ..., "message": ...}}                 instead, if it fails midway

The body is produced as the client reads it (the server's send waits on the socket), so
memory holds one batch whatever the size; a client that disconnects cancels the
statement (the cursor's transaction is rolled back).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from heliosdb.engine.codecs import json_default, non_finite_fixer
from heliosdb.errors import HeliosError
from heliosdb.interfaces.http.auth import CurrentPrincipal, ServicesDep
from heliosdb.interfaces.http.errors import error_body
from heliosdb.interfaces.http.responses import read_json_object, statement_of

router = APIRouter(tags=["query"])

NDJSON = "application/x-ndjson"


@router.post("/query/stream", summary="Stream a query's rows as NDJSON")
async def stream_query(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    body = await read_json_object(request)
    sql, params = statement_of(body)
    batch = services.settings.async_queries.stream_batch_rows
    stack = contextlib.AsyncExitStack()
    started = time.perf_counter()
    try:
        stream = await stack.enter_async_context(
            services.streams.open(principal, sql, params, batch_rows=batch)
        )
    except BaseException:
        await stack.aclose()
        raise
    return StreamingResponse(_lines(stack, stream, started), media_type=NDJSON)


async def _lines(
    stack: contextlib.AsyncExitStack, stream: Any, started: float
) -> AsyncIterator[bytes]:
    # The stream's context (its engine transaction) ends here whichever way we leave:
    # committed after the last row, rolled back on an error or a client that went away.
    outcome: BaseException | None = None
    try:
        columns = [{"name": c.name, "type": c.type} for c in stream.columns]
        yield orjson.dumps({"columns": columns}) + b"\n"
        fix = non_finite_fixer([c.type for c in stream.columns])
        count = 0
        try:
            async for rows in stream:
                if fix is not None:
                    rows = [fix(r) for r in rows]
                count += len(rows)
                yield b"".join(orjson.dumps(r, default=json_default) + b"\n" for r in rows)
        except HeliosError as exc:
            outcome = exc
            yield orjson.dumps(error_body(exc), default=json_default) + b"\n"
            return
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        metrics = {"rows_returned": count, "execution_time_ms": elapsed}
        yield orjson.dumps({"metrics": metrics}) + b"\n"
    except BaseException as exc:
        outcome = exc
        raise
    finally:
        if outcome is None:
            await stack.aclose()
        else:
            await stack.__aexit__(type(outcome), outcome, outcome.__traceback__)
