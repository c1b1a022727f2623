"""The services one node offers, built once by node.py and handed to every interface."""

from __future__ import annotations

from dataclasses import dataclass

from heliosdb.engine import Engine
from heliosdb.services.asyncqueries import AsyncQueries
from heliosdb.services.cancels import CancelRelay
from heliosdb.services.changes import ChangeService
from heliosdb.services.documents import DocumentStore
from heliosdb.services.keys import ApiKeys
from heliosdb.services.keyvalue import KeyValue
from heliosdb.services.query import QueryService
from heliosdb.services.rows import RowsService
from heliosdb.services.streams import RowStreams
from heliosdb.services.tables import TablesService
from heliosdb.services.transactions import Transactions
from heliosdb.services.users import Users
from heliosdb.services.vectors import Vectors
from heliosdb.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: Engine
    keys: ApiKeys
    changes: ChangeService
    async_queries: AsyncQueries
    query: QueryService
    tables: TablesService
    rows: RowsService
    transactions: Transactions
    streams: RowStreams
    vectors: Vectors
    users: Users
    keyvalue: KeyValue
    documents: DocumentStore
    cancels: CancelRelay

    @classmethod
    def build(cls, settings: Settings, engine: Engine) -> Services:
        return cls(
            settings=settings,
            engine=engine,
            keys=ApiKeys(engine, settings.environment),
            changes=ChangeService(engine, settings.changes, settings.engine.database),
            async_queries=AsyncQueries(
                engine,
                QueryService(
                    engine, settings.async_queries.max_result_rows, settings.query.max_result_bytes
                ),
                settings.async_queries,
            ),
            query=QueryService(
                engine, settings.query.max_result_rows, settings.query.max_result_bytes
            ),
            tables=TablesService(engine),
            rows=RowsService(engine, settings.rows),
            transactions=Transactions(
                engine,
                QueryService(
                    engine, settings.query.max_result_rows, settings.query.max_result_bytes
                ),
                idle_timeout=settings.grpc.transaction_idle_timeout,
                max_idle_timeout=settings.grpc.transaction_max_idle_timeout,
                per_principal=settings.grpc.max_transactions_per_principal,
            ),
            streams=RowStreams(engine),
            vectors=Vectors(engine),
            users=Users(engine),
            keyvalue=KeyValue(
                engine,
                durability=settings.redis.durability,
                coalesce_workers=settings.redis.coalesce_workers,
            ),
            documents=DocumentStore(engine),
            cancels=CancelRelay(engine),
        )
