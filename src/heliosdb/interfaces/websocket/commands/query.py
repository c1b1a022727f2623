"""query: one SQL statement with $1..$n parameters, answered like POST /query."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from heliosdb.errors import invalid

if TYPE_CHECKING:
    from heliosdb.interfaces.websocket.codec import Request
    from heliosdb.interfaces.websocket.connection import Connection


async def query(conn: Connection, request: Request) -> dict[str, Any]:
    sql = request.data.get("sql")
    params = request.data.get("params", [])
    if not isinstance(sql, str):
        raise invalid("data.sql must be a string")
    if not isinstance(params, list):
        raise invalid("data.params must be a JSON array")
    assert conn.principal is not None
    result = await conn.services.query.execute(conn.principal, sql, params)
    return {
        "columns": [{"name": c.name, "type": c.type} for c in result.columns],
        "rows": result.rows,
        "affected_rows": result.affected_rows,
        "command": result.status,
        "metrics": {
            "execution_time_ms": result.execution_time_ms,
            "rows_returned": len(result.rows),
        },
    }
