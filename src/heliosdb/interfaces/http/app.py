"""The REST application: routers, error funnel and middleware, assembled in one place.

Request pipeline, outermost first: metrics -> body limit -> routing -> auth dependency
-> handler -> service. POST /query, the hot path, takes the same steps in pure ASGI
(routes/query.py QueryEndpoint) before the stack. Errors of every kind leave through
interfaces/http/errors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from heliosdb import __version__
from heliosdb.interfaces.http import errors
from heliosdb.interfaces.http.middleware import BodyLimitMiddleware, MetricsMiddleware
from heliosdb.interfaces.http.routes import (
    admin,
    async_queries,
    keys,
    query,
    rows,
    stream,
    tables,
    vectors,
)
from heliosdb.services.container import Services

API_PREFIX = "/api/v1"
ROUTERS = (
    query.router,
    async_queries.router,
    stream.router,
    keys.router,
    admin.router,
    tables.router,
    rows.router,
    vectors.router,
)


class RestApp(FastAPI):
    """FastAPI, with hot routes answered in pure ASGI before its middleware stack."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.hot_routes: dict[tuple[str, str], ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hot = self.hot_routes.get((scope["method"], scope["path"]))
            if hot is not None:
                await hot(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def build_app(services: Services, listeners: Callable[[], dict[str, Any]]) -> RestApp:
    app = RestApp(
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
    app.hot_routes[("POST", API_PREFIX + query.PATH)] = query.QueryEndpoint(
        services, services.settings.http.max_body_bytes
    )
    app.add_middleware(BodyLimitMiddleware, limit=services.settings.http.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app
