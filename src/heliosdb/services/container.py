"""The services one node offers, built once by node.py and handed to every interface."""

from __future__ import annotations

from dataclasses import dataclass

from heliosdb.engine import Engine
from heliosdb.services.keys import ApiKeys
from heliosdb.services.query import QueryService
from heliosdb.services.users import Users
from heliosdb.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: Engine
    keys: ApiKeys
    query: QueryService
    users: Users

    @classmethod
    def build(cls, settings: Settings, engine: Engine) -> Services:
        return cls(
            settings=settings,
            engine=engine,
            keys=ApiKeys(engine, settings.environment),
            query=QueryService(engine),
            users=Users(engine),
        )
