"""Rows: GET/POST/PUT/DELETE /tables/{name}/rows with PostgREST-style parameters.

The query string is handed to the rows service as (name, value) pairs in order;
reserved names (select, order, limit, cursor, where, pk, all, return, schema) steer
the request, every other name is a ``column=op.value`` filter.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from heliosdb.errors import invalid
from heliosdb.interfaces.http.auth import CurrentPrincipal, ServicesDep
from heliosdb.interfaces.http.responses import json_response
from heliosdb.services.rows import RowRequest, parse_request

router = APIRouter(tags=["rows"])

_PARAMETERS_DOC = (
    "Filters: column=op.value (eq, neq, gt, gte, lt, lte, like, ilike, match, imatch, in, is, "
    "cs, cd, ov; not. prefix), or=(a.eq.1,b.gt.2), and=(...), where=<SQL boolean expression>. "
    "select=a,b  order=a.asc,b.desc.nullslast  limit=n  cursor=<next_cursor>  pk=<value>  "
    "all=true (update/delete every row)  return=representation|minimal  schema=<name>."
)


def _request(request: Request) -> RowRequest:
    row_request = parse_request(request.query_params.multi_items())
    prefer = request.headers.get("prefer", "")
    if row_request.representation is None and "return=" in prefer:
        row_request.representation = "return=representation" in prefer
    return row_request


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise invalid("the request needs a JSON body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from None


@router.get("/tables/{name}/rows", summary="Read rows", description=_PARAMETERS_DOC)
async def read_rows(
    name: str, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return json_response(await services.rows.read(principal, name, _request(request)))


@router.post(
    "/tables/{name}/rows",
    summary="Insert one row (object) or many (array); returns the rows",
    status_code=201,
    description=_PARAMETERS_DOC,
)
async def insert_rows(
    name: str, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    row_request = _request(request)
    body = await _body(request)
    result = await services.rows.insert(principal, name, row_request, body)
    return json_response(result, status=201)


@router.put(
    "/tables/{name}/rows",
    summary="Update the rows a filter selects with a JSON object of new values",
    description=_PARAMETERS_DOC,
)
async def update_rows(
    name: str, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    row_request = _request(request)
    body = await _body(request)
    return json_response(await services.rows.update(principal, name, row_request, body))


@router.delete(
    "/tables/{name}/rows",
    summary="Delete the rows a filter selects",
    description=_PARAMETERS_DOC,
)
async def delete_rows(
    name: str, request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    return json_response(await services.rows.delete(principal, name, _request(request)))
