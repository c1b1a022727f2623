"""Vector indexes, upsert and similarity search (services/vectors.py does the work).

POST   /vectors/indexes           create {name, dimension, metric, m, ef_construction,
                                  ef_search, metadata_fields}
GET    /vectors/indexes           list
GET    /vectors/indexes/{name}    describe (with the number of vectors)
DELETE /vectors/indexes/{name}    drop
POST   /vectors/upsert            {index_name, vectors: [{id, vector, metadata}]}
POST   /vectors/delete            {index_name, ids}
POST   /vectors/search            {index_name, vector, top_k, filter, include_vectors,
                                  include_metadata, exact, ef_search}

Search is a hot path: :func:`hot_route` answers it ahead of FastAPI's middleware stack,
request object and dependency solving (in the listener's lane when the app has one,
else in pure ASGI; interfaces/http/hotroutes.py), as routes/query.py does for /query;
the FastAPI route below documents it in OpenAPI and answers when the app is mounted
without the hot route. Both run :func:`run_search`, so behaviour and error bodies are
one.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from heliosdb.engine.codecs import json_default
from heliosdb.errors import invalid
from heliosdb.interfaces.http.auth import CurrentPrincipal, ServicesDep
from heliosdb.interfaces.http.hotroutes import HotRoute
from heliosdb.interfaces.http.responses import (
    json_response,
    read_json_object,
)
from heliosdb.security.principals import Principal
from heliosdb.services.container import Services
from heliosdb.services.vectors import VectorRecord

router = APIRouter(prefix="/vectors", tags=["vectors"])
SEARCH_PATH = "/vectors/search"  # under the API prefix
_SEARCH_FIELDS = frozenset(("index_name", "vector", "top_k", "filter", "include_vectors",
                            "include_metadata", "exact", "ef_search"))  # fmt: skip
_FLAGS = ("include_vectors", "include_metadata", "exact")


@router.post("/indexes", summary="Create a vector index", status_code=201)
async def create_index(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    body = await read_json_object(request)
    _only(body, {"name", "dimension", "metric", "m", "ef_construction", "ef_search",
                 "metadata_fields"})  # fmt: skip
    index = await services.vectors.create_index(
        principal,
        body.get("name"),  # type: ignore[arg-type]  # checked by the service
        body.get("dimension"),  # type: ignore[arg-type]
        metric=body.get("metric", "cosine"),
        m=body.get("m"),
        ef_construction=body.get("ef_construction"),
        ef_search=body.get("ef_search"),
        metadata_fields=body.get("metadata_fields"),
    )
    return json_response(index.as_dict(), status=201)


@router.get("/indexes", summary="List vector indexes")
async def list_indexes(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    indexes = await services.vectors.list_indexes()
    return json_response({"indexes": [i.as_dict() for i in indexes]})


@router.get("/indexes/{name}", summary="Describe a vector index")
async def describe_index(name: str, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    return json_response(await services.vectors.describe(principal, name))


@router.delete("/indexes/{name}", summary="Drop a vector index and its vectors")
async def drop_index(name: str, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    await services.vectors.drop_index(principal, name)
    return json_response({"dropped": name})


@router.post("/upsert", summary="Insert or replace vectors by id")
async def upsert(request: Request, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    body = await read_json_object(request)
    _only(body, {"index_name", "vectors"})
    items = body.get("vectors")
    if not isinstance(items, list):
        raise invalid("vectors must be an array of {id, vector, metadata}")
    records = [_record(item, i) for i, item in enumerate(items)]
    count = await services.vectors.upsert(principal, _index_name(body), records)
    return json_response({"upserted_count": count})


@router.post("/delete", summary="Delete vectors by id")
async def delete(request: Request, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    body = await read_json_object(request)
    _only(body, {"index_name", "ids"})
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
        raise invalid("ids must be an array of strings")
    count = await services.vectors.delete(principal, _index_name(body), [str(i) for i in ids])
    return json_response({"deleted_count": count})


@router.post("/search", summary="Vector similarity search")
async def search(request: Request, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    body = await read_json_object(request)
    return Response(await run_search(services, principal, body), media_type="application/json")


async def run_search(services: Services, principal: Principal, body: dict[str, Any]) -> bytes:
    """Check a search body, search, and render the JSON response body."""
    if not _SEARCH_FIELDS.issuperset(body):
        _only(body, _SEARCH_FIELDS)
    flags = {k: body.get(k, False) for k in _FLAGS}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise invalid(f"{key} must be true or false")
    text = body.get("filter")
    if text is not None and not isinstance(text, str):
        raise invalid("filter must be a string such as \"category = 'shoes' AND price < 100\"")
    result = await services.vectors.search(
        principal,
        _index_name(body),
        body.get("vector"),  # type: ignore[arg-type]  # checked by the service
        body.get("top_k", 10),
        filter=text,
        ef_search=body.get("ef_search"),
        **flags,
    )
    results = []
    for match in result.matches:
        item: dict[str, Any] = {"id": match.id, "score": match.score, "distance": match.distance}
        if match.vector is not None:
            item["vector"] = match.vector
        if match.metadata is not None:
            item["metadata"] = match.metadata
        results.append(item)
    return orjson.dumps(
        {
            "results": results,
            "metrics": {
                "execution_time_ms": result.execution_time_ms,
                "search_path": result.search_path,
                "ef_search": result.ef_search,
                "ef_search_source": result.ef_search_source,
                "results": len(results),
            },
        },
        default=json_default,
        option=orjson.OPT_NON_STR_KEYS,
    )


SEARCH_ROUTE = next(r for r in router.routes if getattr(r, "path", None) == SEARCH_PATH)


def hot_route(services: Services, max_body_bytes: int, path: str) -> HotRoute:
    """``POST /api/v1/vectors/search`` ahead of FastAPI (hotroutes.py), under FastAPI's
    label."""
    label = getattr(SEARCH_ROUTE, "path", SEARCH_PATH)
    return HotRoute(services, max_body_bytes, path, label, run_search)


def _index_name(body: dict[str, Any]) -> str:
    name = body.get("index_name")
    if not isinstance(name, str) or not name:
        raise invalid("index_name is required")
    return name


def _record(item: Any, position: int) -> VectorRecord:
    if not isinstance(item, dict):
        raise invalid(f"vectors[{position}] must be an object {{id, vector, metadata}}")
    unknown = set(item) - {"id", "vector", "metadata"}
    if unknown:
        raise invalid(f"vectors[{position}] has unknown fields: {', '.join(sorted(unknown))}")
    record_id = item.get("id")
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)
    metadata = item.get("metadata")
    return VectorRecord(
        id=record_id,  # type: ignore[arg-type]  # checked by the service
        vector=item.get("vector"),  # type: ignore[arg-type]
        metadata={} if metadata is None else metadata,
    )


def _only(body: dict[str, Any], allowed: AbstractSet[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))}")
