"""Async queries: POST /query/async, GET and DELETE /query/async/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from heliosdb.interfaces.http.auth import CurrentPrincipal, ServicesDep
from heliosdb.interfaces.http.responses import json_response, read_json_object, statement_of

router = APIRouter(tags=["query"])


@router.post("/query/async", summary="Start a query that runs in the background", status_code=202)
async def submit_async_query(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    body = await read_json_object(request)
    sql, params = statement_of(body)
    return json_response(await services.async_queries.submit(principal, sql, params), 202)


@router.get("/query/async/{query_id}", summary="Status and result of an async query")
async def get_async_query(
    query_id: str, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return json_response(await services.async_queries.get(principal, query_id))


@router.delete("/query/async/{query_id}", summary="Cancel an async query")
async def cancel_async_query(
    query_id: str, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return json_response(await services.async_queries.cancel(principal, query_id))
