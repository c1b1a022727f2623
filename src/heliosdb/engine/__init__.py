"""The only package that talks to PostgreSQL."""

from heliosdb.engine.pools import Engine, EngineConnection
from heliosdb.engine.roles import Access

__all__ = ["Access", "Engine", "EngineConnection"]
