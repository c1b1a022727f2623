"""The REST application: routers, error funnel and middleware, assembled in one place.

Request pipeline, outermost first: metrics -> body limit -> routing -> auth dependency
-> handler -> service. POST /query, the hot path, takes the same steps in pure ASGI
(routes/query.py QueryRoute) just inside the body limit. Errors of every kind leave
through interfaces/http/errors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from heliosdb import __version__
from heliosdb.interfaces.http import errors
from heliosdb.interfaces.http.middleware import BodyLimitMiddleware, MetricsMiddleware
from heliosdb.interfaces.http.routes import admin, keys, query, rows, tables, vectors
from heliosdb.services.container import Services

API_PREFIX = "/api/v1"
ROUTERS = (
    query.router,
    keys.router,
    admin.router,
    tables.router,
    rows.router,
    vectors.router,
)


def build_app(services: Services, listeners: Callable[[], dict[str, Any]]) -> FastAPI:
    app = FastAPI(
        title="HeliosDB",
        version=__version__,
        description="One database, every interface: the REST API.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    app.state.listeners = listeners
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    errors.install(app)
    # Innermost first: the pure-ASGI POST /query sits inside the body limit and metrics.
    app.add_middleware(
        query.QueryRoute, services=services, path=API_PREFIX + query.PATH, route=query.ROUTE
    )
    app.add_middleware(BodyLimitMiddleware, limit=services.settings.http.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app
