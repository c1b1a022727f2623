"""GET /health, /info and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from heliosdb import __version__
from heliosdb.interfaces.http.auth import ServicesDep
from heliosdb.interfaces.http.responses import json_response
from heliosdb.observability.metrics import exposition

router = APIRouter(tags=["admin"])

API_VERSION = "v1"
SUPPORTED_VERSIONS = ["v1"]
DEPRECATED_FEATURES: list[dict[str, str]] = []


@router.get("/health", summary="Engine reachability and each listener's state")
async def health(request: Request, services: ServicesDep) -> Response:
    engine_ok = await services.engine.ping()
    listeners = request.app.state.listeners()
    healthy = engine_ok and all(entry["state"] == "serving" for entry in listeners.values())
    return json_response(
        {
            "status": "healthy" if healthy else "unhealthy",
            "engine": {
                "reachable": engine_ok,
                "mode": "embedded" if services.engine.is_embedded else "external",
                "pools": services.engine.pool_stats(),
                "pipelines": services.query.pipelines.stats(),
            },
            "listeners": listeners,
            "changes": await services.changes.health(),
            "version": __version__,
        },
        status=200 if healthy else 503,
    )


@router.get("/info", summary="Server and API version information")
async def info() -> Response:
    return json_response(
        {
            "version": __version__,
            "api_version": API_VERSION,
            "supported_versions": SUPPORTED_VERSIONS,
            "deprecated_features": DEPRECATED_FEATURES,
        }
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics() -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
