"""Tables: GET/POST /tables, GET/DELETE /tables/{name}."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from heliosdb.interfaces.http.auth import CurrentPrincipal, ServicesDep
from heliosdb.interfaces.http.responses import json_response, read_json_object

router = APIRouter(tags=["tables"])

SchemaParam = Annotated[
    str | None, Query(description="Schema of the table (default public, or schema.name).")
]


class ColumnSpec(BaseModel):
    name: str
    type: str = Field(description="integer, bigint, text, varchar(n), numeric(p,s), jsonb, ...")
    nullable: bool = True
    default: Any = Field(None, description="JSON scalar, or SQL text: 'x', 0, now(), ...")
    primary_key: bool = False
    unique: bool = False


class IndexSpec(BaseModel):
    columns: list[str]
    unique: bool = False
    name: str | None = None
    method: str = Field("btree", description="btree, hash, gin or brin.")


class TableSpec(BaseModel):
    name: str
    schema_: str = Field("public", alias="schema")
    columns: list[ColumnSpec]
    primary_key: list[str] = Field(default_factory=list)
    indexes: list[IndexSpec] = Field(default_factory=list)


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with nested models inlined (no "$defs" the document lacks)."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


@router.get("/tables", summary="List tables")
async def list_tables(
    principal: CurrentPrincipal, services: ServicesDep, schema: SchemaParam = None
) -> Response:
    tables = await services.tables.list_tables(principal, schema)
    return json_response({"tables": tables, "count": len(tables)})


@router.get("/tables/{name}", summary="Get a table's schema")
async def describe_table(
    name: str, principal: CurrentPrincipal, services: ServicesDep, schema: SchemaParam = None
) -> Response:
    return json_response(await services.tables.describe(principal, name, schema))


@router.post(
    "/tables",
    summary="Create a table",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_schema(TableSpec)}},
        }
    },
)
async def create_table(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    spec = await read_json_object(request)
    return json_response(await services.tables.create(principal, spec), status=201)


@router.delete("/tables/{name}", summary="Drop a table")
async def drop_table(
    name: str,
    principal: CurrentPrincipal,
    services: ServicesDep,
    schema: SchemaParam = None,
    cascade: Annotated[bool, Query(description="Also drop dependent objects.")] = False,
) -> Response:
    return json_response(await services.tables.drop(principal, name, schema, cascade=cascade))
