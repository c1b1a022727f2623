"""The REST application: routers, error funnel and middleware, assembled in one place.

Request pipeline, outermost first: metrics -> body limit -> routing -> auth dependency
-> handler -> service. The hot routes, POST /query and POST /vectors/search, take the
same steps themselves (hotroutes.py): in the listener's lane before ASGI (server.py),
or in pure ASGI before the stack for requests the lane does not take. Errors of every
kind leave through interfaces/http/errors.py.
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
from heliosdb.interfaces.http.server import Lane
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
    """FastAPI, with hot routes answered in pure ASGI before its middleware stack, and
    by the listener's lane (``lanes``, raw POST path -> route; server.py) before ASGI."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.hot_routes: dict[tuple[str, str], ASGIApp] = {}
        self.lanes: dict[bytes, Lane] = {}

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
    for module, path in ((query, query.PATH), (vectors, vectors.SEARCH_PATH)):
        route = module.hot_route(services, services.settings.http.max_body_bytes, API_PREFIX + path)
        app.hot_routes[("POST", API_PREFIX + path)] = route
        app.lanes[(API_PREFIX + path).encode()] = route
    app.add_middleware(BodyLimitMiddleware, limit=services.settings.http.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app
