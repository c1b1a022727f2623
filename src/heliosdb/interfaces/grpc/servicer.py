"""``heliosdb.v1.HeliosDB``: one method per RPC, each a few lines over one service.

The pipeline every call takes is built here once: metrics and the error funnel
(:func:`_unary` / :func:`_streaming`) -> authentication -> handler -> service.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import orjson

from heliosdb import __version__
from heliosdb.errors import HeliosError, invalid
from heliosdb.interfaces.grpc.auth import authenticate, recent_principal
from heliosdb.interfaces.grpc.errors import STATUS, abort, from_unexpected
from heliosdb.interfaces.grpc.values import (
    dict_of,
    params_of,
    row_encoder,
    shape_of,
    struct_of,
)
from heliosdb.observability.metrics import REQUESTS, RequestRecorder
from heliosdb.security.principals import Principal
from heliosdb.services.container import Services
from heliosdb.services.query import QueryResult
from heliosdb.services.transactions import Isolation
from heliosdb.services.vectors import VectorRecord
from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")
COLUMNS_KEY = "heliosdb-columns"

_ISOLATION = {
    pb.ISOLATION_LEVEL_UNSPECIFIED: Isolation.READ_COMMITTED,
    pb.READ_COMMITTED: Isolation.READ_COMMITTED,
    pb.REPEATABLE_READ: Isolation.REPEATABLE_READ,
    pb.SERIALIZABLE: Isolation.SERIALIZABLE,
}
_ISOLATION_BACK = {
    Isolation.READ_COMMITTED: pb.READ_COMMITTED,
    Isolation.REPEATABLE_READ: pb.REPEATABLE_READ,
    Isolation.SERIALIZABLE: pb.SERIALIZABLE,
}

Handler = Callable[[Any, Any, Context], Awaitable[R]]
_requests = RequestRecorder("grpc")


def _unary(method: Handler[R]) -> Handler[R]:
    name = method.__name__

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Context) -> R:
        started = time.perf_counter()
        try:
            response = await method(self, request, context)
        except HeliosError as exc:
            _requests.record(name, STATUS[exc.code].name, time.perf_counter() - started)
            await abort(context, exc)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            _requests.record(name, "INTERNAL", time.perf_counter() - started)
            await abort(context, from_unexpected(name, exc))
        _requests.record(name, "OK", time.perf_counter() - started)
        return response

    return call


def _streaming(
    method: Callable[[Any, Any, Context], AsyncIterator[R]],
) -> Callable[[Any, Any, Context], AsyncIterator[R]]:
    name = method.__name__

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Context) -> AsyncIterator[R]:
        status = "OK"
        try:
            async for item in method(self, request, context):
                yield item
        except HeliosError as exc:
            status = STATUS[exc.code].name
            await abort(context, exc)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            status = "INTERNAL"
            await abort(context, from_unexpected(name, exc))
        finally:
            REQUESTS.labels("grpc", name, status).inc()

    return call


class HeliosDBServicer(heliosdb_pb2_grpc.HeliosDBServicer):  # type: ignore[misc]
    """``process``: this process's number when the node serves gRPC from several
    (``workers``); its transaction ids then start with ``<process>.`` so the front of
    whichever process a call reaches can send it to the one holding the transaction."""

    def __init__(self, services: Services, process: int | None = None) -> None:
        self.services = services
        self.batch_rows = services.settings.grpc.stream_batch_rows
        self.prefix = "" if process is None else f"{process}."
        # ``await self.principal(context)``: authenticate itself, one coroutine per call;
        # ``self.recent(context)`` first on the hot path: a key verified a moment ago, no
        # coroutine.
        self.principal: Callable[[Context], Awaitable[Principal]] = functools.partial(
            authenticate, services.keys
        )
        self.recent: Callable[[Context], Principal | None] = functools.partial(
            recent_principal, services.keys
        )

    def _local(self, transaction_id: str) -> str:
        """A transaction id as this process's service knows it (one of another process's,
        unchanged, is then simply not found here)."""
        if self.prefix and transaction_id.startswith(self.prefix) and transaction_id != self.prefix:
            return transaction_id[len(self.prefix) :]
        return transaction_id

    # -- queries ---------------------------------------------------------------------------

    @_unary
    async def ExecuteQuery(self, request: pb.QueryRequest, context: Context) -> pb.QueryResponse:
        principal = self.recent(context) or await self.principal(context)
        params = params_of(request.params)
        if request.HasField("transaction_id"):
            result = await self.services.transactions.execute(
                principal, self._local(request.transaction_id.id), request.sql, params
            )
        else:
            result = await self.services.query.execute(principal, request.sql, params)
        return _query_response(result)

    @_streaming
    async def ExecuteQueryStream(
        self, request: pb.QueryRequest, context: Context
    ) -> AsyncIterator[pb.Row]:
        principal = await self.principal(context)
        params = params_of(request.params)
        async with contextlib.AsyncExitStack() as stack:
            connection = None
            if request.HasField("transaction_id"):
                opened = await stack.enter_async_context(
                    self.services.transactions.use(
                        principal, self._local(request.transaction_id.id)
                    )
                )
                connection = opened.connection
            stream = await stack.enter_async_context(
                self.services.streams.open(
                    principal,
                    request.sql,
                    params,
                    batch_rows=self.batch_rows,
                    connection=connection,
                )
            )
            columns = [{"name": c.name, "type": c.type} for c in stream.columns]
            await context.send_initial_metadata(((COLUMNS_KEY, orjson.dumps(columns).decode()),))
            encode = row_encoder(stream.columns)
            async for batch in stream:
                for row in batch:
                    yield encode(row)

    # -- transactions ----------------------------------------------------------------------

    @_unary
    async def BeginTransaction(
        self, request: pb.BeginTransactionRequest, context: Context
    ) -> pb.TransactionResponse:
        principal = await self.principal(context)
        isolation = _ISOLATION.get(request.isolation_level)
        if isolation is None:
            raise invalid(f"unknown isolation_level {request.isolation_level}")
        opened = await self.services.transactions.begin(
            principal,
            isolation,
            read_only=request.read_only,
            idle_timeout=request.idle_timeout_seconds or None,
        )
        return pb.TransactionResponse(
            transaction_id=pb.TransactionId(id=self.prefix + opened.id),
            isolation_level=_ISOLATION_BACK[opened.isolation],
            read_only=opened.read_only,
            idle_timeout_seconds=int(opened.idle_timeout),
        )

    @_unary
    async def CommitTransaction(
        self, request: pb.TransactionId, context: Context
    ) -> pb.CommitResponse:
        principal = await self.principal(context)
        await self.services.transactions.commit(principal, self._local(request.id))
        return pb.CommitResponse(transaction_id=request, committed=True)

    @_unary
    async def RollbackTransaction(
        self, request: pb.TransactionId, context: Context
    ) -> pb.RollbackResponse:
        principal = await self.principal(context)
        await self.services.transactions.rollback(principal, self._local(request.id))
        return pb.RollbackResponse(transaction_id=request, rolled_back=True)

    # -- vectors ---------------------------------------------------------------------------

    @_unary
    async def VectorSearch(
        self, request: pb.VectorSearchRequest, context: Context
    ) -> pb.VectorSearchResponse:
        principal = self.recent(context) or await self.principal(context)
        result = await self.services.vectors.search(
            principal,
            request.index_name,
            list(request.vector),
            request.top_k or 10,
            filter=request.filter if request.HasField("filter") else None,
            include_vectors=request.include_vectors,
            include_metadata=request.include_metadata,
        )
        # Filled in place: a message built from keyword messages is copied into its
        # parent, which cost three times as much for ten matches.
        response = pb.VectorSearchResponse()
        add = response.results.add
        for match in result.matches:
            out = add(id=match.id, score=match.score, distance=match.distance)
            if match.vector is not None:
                out.vector.extend(match.vector)
            if match.metadata is not None:
                out.metadata.CopyFrom(struct_of(match.metadata))
        metrics = response.metrics
        metrics.execution_time_ms = result.execution_time_ms
        metrics.search_path = result.search_path
        metrics.ef_search = result.ef_search
        metrics.results = len(result.matches)
        metrics.ef_search_source = result.ef_search_source
        return response

    @_unary
    async def VectorUpsert(
        self, request: pb.VectorUpsertRequest, context: Context
    ) -> pb.VectorUpsertResponse:
        principal = await self.principal(context)
        started = time.perf_counter()
        records = [
            VectorRecord(id=r.id, vector=list(r.vector), metadata=dict_of(r.metadata))
            for r in request.vectors
        ]
        count = await self.services.vectors.upsert(principal, request.index_name, records)
        return pb.VectorUpsertResponse(
            upserted_count=count,
            execution_time_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    # -- admin -----------------------------------------------------------------------------

    @_unary
    async def HealthCheck(self, request: pb.Empty, context: Context) -> pb.HealthResponse:
        reachable = await self.services.engine.ping()
        return pb.HealthResponse(
            status=pb.HealthResponse.SERVING if reachable else pb.HealthResponse.NOT_SERVING,
            version=__version__,
            engine_reachable=reachable,
            engine_mode="embedded" if self.services.engine.is_embedded else "external",
        )


def _query_response(result: QueryResult) -> pb.QueryResponse:
    shape = shape_of(result.columns)
    response = pb.QueryResponse()
    response.CopyFrom(shape.template)
    rows, fill = response.rows, shape.fill
    for row in result.rows:
        fill(rows.add().values, row)
    response.affected_rows = result.affected_rows
    metrics = response.metrics
    metrics.execution_time_ms = result.execution_time_ms
    metrics.rows_returned = len(result.rows)
    metrics.command = result.status
    return response
