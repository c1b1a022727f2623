"""POST /query: one SQL statement with $1..$n parameters, or a script."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from heliosdb.errors import invalid
from heliosdb.interfaces.http.auth import CurrentPrincipal, ServicesDep
from heliosdb.interfaces.http.responses import json_response, read_json_object

router = APIRouter(tags=["query"])


class QueryRequest(BaseModel):
    sql: str = Field(description="One SQL statement, with $1..$n placeholders.")
    params: list[Any] = Field(default_factory=list, description="Values for $1..$n.")
    script: bool = Field(
        False, description="Run several ;-separated statements (no params, no rows back)."
    )
    row_format: str = Field("array", description="'array' (default) or 'object' per row.")


@router.post(
    "/query",
    summary="Execute a SQL statement",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": QueryRequest.model_json_schema()}},
        }
    },
)
async def execute_query(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    body = await read_json_object(request)
    sql = body.get("sql")
    params = body.get("params", [])
    script = body.get("script", False)
    row_format = body.get("row_format", "array")
    if not isinstance(sql, str):
        raise invalid("sql must be a string")
    if not isinstance(params, list):
        raise invalid("params must be a JSON array")
    if not isinstance(script, bool):
        raise invalid("script must be true or false")
    if row_format not in ("array", "object"):
        raise invalid("row_format must be 'array' or 'object'")
    result = await services.query.execute(principal, sql, params, script=script)
    names = [c.name for c in result.columns]
    rows: list[Any] = result.rows
    if row_format == "object":
        rows = [dict(zip(names, row, strict=True)) for row in rows]
    return json_response(
        {
            "columns": [{"name": c.name, "type": c.type} for c in result.columns],
            "rows": rows,
            "affected_rows": result.affected_rows,
            "command": result.status,
            "metrics": {
                "execution_time_ms": result.execution_time_ms,
                "rows_returned": len(result.rows),
            },
        }
    )
