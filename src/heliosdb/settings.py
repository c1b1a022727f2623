"""One Settings object: ``heliosdb.yaml`` < ``HELIOSDB_*`` environment < command-line flags.

Settings are data: each field has its type, default and help text here and nowhere
else, and ``tests/unit/test_settings.py`` checks that each is documented in
``docs/configuration.md``. Nested fields read from the environment with a double
underscore: ``HELIOSDB_HTTP__PORT=9000``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


class Environment(enum.StrEnum):
    PRODUCTION = "production"
    DEVELOPMENT = "development"
    TEST = "test"


class HttpSettings(BaseModel):
    port: int = Field(8080, description="REST API port; 0 picks a free port.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024, description="Largest request body accepted, in bytes."
    )
    max_pending_body_bytes: int = Field(
        64 * 1024 * 1024,
        description="Request body bytes the node holds at once for requests whose body has "
        "not all arrived, all connections together; the request that would pass it gets "
        "503 RESOURCE_EXHAUSTED and its connection closes.",
    )
    max_connections: int = Field(
        10000,
        ge=1,
        description="Client connections the REST listener holds at once (per node process); "
        "past it a new connection is answered 503 RESOURCE_EXHAUSTED with Retry-After and "
        "closed.",
    )
    keep_alive_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a connection may stay open with no request in progress (after it "
        "opened or after a response) before the node closes it.",
    )
    read_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a client has to send a request's headers once its first byte "
        "came, and the longest pause between two reads of its body; past it the connection "
        "closes.",
    )
    shutdown_grace_seconds: float = Field(
        10.0, description="How long in-flight requests may run after a stop signal."
    )


class EngineSettings(BaseModel):
    url: SecretStr | None = Field(
        None,
        description="postgresql:// URL of an external PostgreSQL 15+ server; "
        "unset means the embedded engine in the data directory.",
    )
    database: str = Field("heliosdb", description="Engine database that holds HeliosDB data.")
    query_timeout: float = Field(
        30.0, description="Per-statement timeout in seconds, enforced by the engine."
    )
    pool_size: int = Field(
        16,
        description="Engine connections for read-write principals (per node process; the "
        "Redis service keeps 1 + redis.coalesce_workers of them).",
    )
    readonly_pool_size: int = Field(5, description="Engine connections for read-only principals.")
    system_pool_size: int = Field(
        3, description="Engine connections for HeliosDB's own bookkeeping."
    )


class GrpcSettings(BaseModel):
    port: int = Field(50051, description="gRPC API port; 0 picks a free port.")
    front: bool = Field(
        True,
        description="Serve heliosdb.v1.HeliosDB calls on HeliosDB's own HTTP/2 front (a "
        "fraction of grpc.aio's CPU per call) and relay every other stream (health, "
        "reflection) to grpc.aio; false: grpc.aio serves the port alone. With TLS, grpc.aio "
        "serves the port.",
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024, description="Largest gRPC message received or sent, in bytes."
    )
    stream_batch_rows: int = Field(
        1000, description="Rows ExecuteQueryStream fetches from its engine cursor at a time."
    )
    transaction_idle_timeout: float = Field(
        60.0, description="Seconds an idle transaction stays open before it is rolled back."
    )
    transaction_max_idle_timeout: float = Field(
        600.0, description="Largest idle timeout a client may ask for in BeginTransaction."
    )
    max_transactions_per_principal: int = Field(
        4, description="Open transactions one principal (API key or user) may hold at once."
    )
    max_connections: int = Field(
        10000,
        ge=1,
        description="Client connections the gRPC listener holds at once (per node process); "
        "past it the first call of a new connection fails with RESOURCE_EXHAUSTED and the "
        "connection closes.",
    )
    idle_timeout: float = Field(
        300.0,
        ge=0,
        description="Seconds a connection may stay without a call in progress (opened, or "
        "after its last call) before the node sends GOAWAY and closes it (clients reconnect "
        "for their next call); checked every idle_timeout, so it goes within twice that. "
        "0: never.",
    )
    shutdown_grace_seconds: float = Field(
        5.0, description="How long in-flight gRPC calls may run after a stop signal."
    )


class PostgresSettings(BaseModel):
    port: int = Field(5432, description="PostgreSQL wire protocol port; 0 picks a free port.")
    auth_method: Literal["scram-sha-256", "md5", "password"] = Field(
        "scram-sha-256",
        description="How clients prove their password: scram-sha-256; md5 (legacy clients; "
        "only users created with --md5 can log in, API keys cannot); or password "
        "(cleartext; use it only over TLS).",
    )
    pool_mode: Literal["session", "transaction"] = Field(
        "session",
        description="session: one engine connection for each client session (everything "
        "works); transaction: engine connections return to a pool after each transaction.",
    )
    transaction_port: int | None = Field(
        None,
        description="A second PostgreSQL port that always uses transaction pooling; unset: "
        "none; 0 picks a free port.",
    )
    pool_size: int = Field(
        20,
        description="Transaction mode: engine connections per pool (one pool per engine role "
        "and set of startup parameters).",
    )
    pool_timeout: float = Field(
        10.0,
        description="Transaction mode: seconds a client waits for a free engine connection.",
    )
    lanes: int = Field(
        0,
        ge=0,
        description="Transaction mode: engine connections, besides each pool, on which quick "
        "single SELECTs of several clients run one after another (0: none). Faster on a "
        "busy node; a query waits for the ones queued ahead of it (docs/postgres.md, Lanes).",
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024,
        ge=5,
        description="Transaction mode: the longest message the port holds whole to read it "
        "(Query, Parse ...); a longer one gets FATAL 54000 and the connection closes. Bind, "
        "CopyData and FunctionCall messages pass on to the engine as they arrive, up to "
        "PostgreSQL's 1 GiB.",
    )
    max_connections: int = Field(
        200, description="Client connections the PostgreSQL listener accepts at once."
    )
    max_connections_per_principal: int = Field(
        100, description="Client connections one principal (API key or user) may hold at once."
    )
    max_startup_packet_bytes: int = Field(
        10000, description="Largest startup or authentication packet accepted before login."
    )
    idle_timeout: float = Field(
        0.0,
        description="Seconds a client connection may stay idle (nothing sent either way) "
        "before it is closed with FATAL 57P05; 0 = never.",
    )
    auth_timeout: float = Field(
        30.0, description="Seconds a client has to finish connecting and authenticating."
    )
    auth_failures_per_minute: int = Field(
        30, description="Failed logins one source address may make per minute; 0 = no limit."
    )


class RowsSettings(BaseModel):
    default_limit: int = Field(
        100, description="Rows GET /tables/{name}/rows returns when the request has no limit."
    )
    max_limit: int = Field(10000, description="Largest limit a rows request may ask for.")
    max_insert_rows: int = Field(
        10000, description="Most rows one POST /tables/{name}/rows may insert."
    )
    catalog_cache_seconds: float = Field(
        2.0,
        description="How long a node reuses a table's column list and primary key for row "
        "requests; 0 reads the catalog on every request.",
    )


class ChangesSettings(BaseModel):
    enabled: bool = Field(
        True, description="Capture committed row changes from the engine's WAL (logical decoding)."
    )
    retention_seconds: float = Field(
        3600.0,
        description="How long captured events stay resumable with from_position, in seconds.",
    )
    stream: bool = Field(
        True,
        description="Take changes from a replication stream (the engine pushes each "
        "transaction as it commits); false, or an engine that refuses replication "
        "connections: poll the slot every poll_interval.",
    )
    poll_interval: float = Field(
        0.005, description="Seconds the capture leader waits between checks for new WAL."
    )
    batch_changes: int = Field(
        5000, description="Changes the capture leader decodes per round (whole transactions)."
    )
    capture_process: bool = Field(
        True,
        description="Run the capture leader in a process of its own, started by the node, "
        "away from the event loop that serves clients; false: in the node's (and each "
        "worker's) process.",
    )


class WebSocketSettings(BaseModel):
    port: int = Field(8081, description="WebSocket API port; 0 picks a free port.")
    max_message_bytes: int = Field(
        1024 * 1024, description="Largest WebSocket message a client may send, in bytes."
    )
    max_connections: int = Field(
        10000,
        ge=1,
        description="Client connections the WebSocket listener holds at once (per node "
        "process); past it a new connection is answered 503 RESOURCE_EXHAUSTED before the "
        "upgrade and closed.",
    )
    max_subscriptions: int = Field(100, description="Subscriptions one connection may hold.")
    queue_messages: int = Field(
        10000,
        description="Outgoing messages buffered per connection; a subscription that overflows "
        "it ends with a slow-consumer error.",
    )
    heartbeat_seconds: float = Field(
        20.0, description="Seconds between protocol pings the server sends; 0 disables them."
    )
    idle_timeout: float = Field(
        300.0,
        description="Seconds a connection may stay without any client message before it is "
        "closed; 0 disables the limit.",
    )
    auth_timeout: float = Field(
        30.0, description="Seconds a new connection has to authenticate before it is closed."
    )
    credential_check_seconds: float = Field(
        60.0, description="How often an open connection's key is checked for revocation."
    )


class QuerySettings(BaseModel):
    max_result_rows: int = Field(
        1_000_000,
        ge=0,
        description="Most rows one statement may return through POST /query, gRPC "
        "ExecuteQuery and WebSocket query (the node counts rows as they arrive and stops "
        "the statement past it, so it never holds more); a larger result fails with "
        "RESOURCE_EXHAUSTED. 0: no limit.",
    )
    max_result_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="Most bytes of rows (as the engine sends them) one statement may return "
        "through POST /query, gRPC ExecuteQuery, WebSocket query and async queries (the "
        "node counts them as they arrive and stops the statement before a row that would "
        "pass it); a larger result fails with RESOURCE_EXHAUSTED. 0: no limit.",
    )


class AsyncQuerySettings(BaseModel):
    result_ttl_seconds: float = Field(
        3600.0, description="How long a finished async query's result is kept, in seconds."
    )
    max_result_rows: int = Field(
        100_000, description="Most rows an async query may keep; larger results fail."
    )
    max_running_per_node: int = Field(
        8, description="Async queries one node runs at once; more wait in the queue."
    )
    stream_batch_rows: int = Field(
        1000, description="Rows POST /query/stream fetches from its engine cursor at a time."
    )


class RedisSettings(BaseModel):
    port: int = Field(6379, description="Redis (RESP2/RESP3) port; 0 picks a free port.")
    durability: Literal["always", "everysec"] = Field(
        "everysec",
        description="always: a write is acknowledged after the engine flushed it to disk "
        "(synchronous_commit on); everysec: the engine flushes within a fraction of a second "
        "(synchronous_commit off for Redis writes), like Redis's appendfsync everysec.",
    )
    require_auth: bool = Field(
        True, description="Clients must AUTH (or HELLO ... AUTH) with an API key first."
    )
    max_clients: int = Field(10000, description="Redis connections accepted at once.")
    idle_timeout_seconds: float = Field(
        0, description="Close a Redis connection idle this long (0 = never), like 'timeout'."
    )
    max_bulk_bytes: int = Field(
        512 * 1024 * 1024,
        description="What CONFIG GET proto-max-bulk-len reports; a request, bulks and all, "
        "is bounded by max_query_buffer_bytes.",
    )
    max_query_buffer_bytes: int = Field(
        1024 * 1024 * 1024,
        description="Largest unparsed request a Redis client may send (client-query-buffer-limit).",
    )
    max_inline_bytes: int = Field(
        64 * 1024, description="Longest inline (telnet-style) command line."
    )
    coalesce_workers: int = Field(
        2,
        description="Engine connections that batch many clients' plain GET/SET into one round "
        "trip each.",
    )


class MongoSettings(BaseModel):
    port: int = Field(27017, description="MongoDB wire protocol port; 0 picks a free port.")
    max_connections: int = Field(10000, description="MongoDB client connections accepted at once.")
    transaction_lifetime_limit_seconds: float = Field(
        60.0,
        gt=0,
        description="A multi-document transaction not committed or aborted this many seconds "
        "after it started is aborted and its engine connection freed (MongoDB's "
        "transactionLifetimeLimitSeconds; setParameter changes it at run time).",
    )
    transaction_lock_timeout_ms: int = Field(
        5,
        ge=0,
        description="How long a statement in a transaction waits for a row another open "
        "transaction holds before failing with WriteConflict (MongoDB's "
        "maxTransactionLockRequestTimeoutMillis); 0 waits without limit.",
    )
    max_transactions_per_principal: int = Field(
        4,
        ge=1,
        description="Open multi-document transactions one principal may hold at once on a "
        "node (each holds an engine connection until it ends).",
    )
    cursor_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="A cursor not read for this long is closed and its engine connection "
        "freed (MongoDB's cursorTimeoutMillis).",
    )
    max_streaming_cursors: int = Field(
        4,
        ge=0,
        description="Find cursors that may hold an engine connection (one read-only "
        "snapshot each) at once, per engine pool; past it a cursor reads each getMore "
        "with a statement of its own (no snapshot across batches).",
    )
    max_stage_bytes: int = Field(
        100 * 1024 * 1024,
        ge=1,
        description="Bytes (BSON size) one aggregate stage run in the node may hold "
        "($group, $sort, $facet, $lookup's joined arrays...); past it the aggregate fails "
        "with QueryExceededMemoryLimitNoDiskUseAllowed (292), or ExceededMemoryLimit (146) "
        "with allowDiskUse: true, since the node does not spill stages to disk.",
    )


class TlsSettings(BaseModel):
    enabled: bool = Field(False, description="Serve TLS on every listener.")
    cert_file: Path | None = Field(None, description="Server certificate (PEM).")
    key_file: Path | None = Field(None, description="Server private key (PEM).")
    client_auth: Literal["none", "optional", "require"] = Field(
        "none", description="Whether clients must present a certificate."
    )
    client_ca_file: Path | None = Field(
        None, description="CA bundle that client certificates must chain to."
    )


class OAuth2Settings(BaseModel):
    enabled: bool = Field(False, description="Accept tokens from an OIDC provider.")
    provider: str | None = Field(None, description="google, azure, okta, auth0 or custom.")
    client_id: str | None = Field(None, description="OAuth client id.")
    client_secret: SecretStr | None = Field(None, description="OAuth client secret.")
    tenant_id: str | None = Field(None, description="Tenant (Azure AD).")
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email"], description="Scopes."
    )


class AuthenticationSettings(BaseModel):
    oauth2: OAuth2Settings = Field(default_factory=OAuth2Settings)  # type: ignore[arg-type]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HELIOSDB_",
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file="heliosdb.yaml",
    )

    data_dir: Path = Field(Path("heliosdb-data"), description="Node data directory.")
    environment: Environment = Field(
        Environment.PRODUCTION,
        description="production, development or test; hdb_test_ keys work only outside production.",
    )
    host: str = Field("127.0.0.1", description="Address every listener binds to.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes serving the REST, WebSocket, Redis and PostgreSQL APIs on their "
        "ports (SO_REUSEPORT); one Python process uses one core at most, so set it to the number "
        "of cores the node may use.",
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
    http: HttpSettings = Field(default_factory=HttpSettings)  # type: ignore[arg-type]
    engine: EngineSettings = Field(default_factory=EngineSettings)  # type: ignore[arg-type]
    tls: TlsSettings = Field(default_factory=TlsSettings)  # type: ignore[arg-type]
    changes: ChangesSettings = Field(default_factory=ChangesSettings)  # type: ignore[arg-type]
    websocket: WebSocketSettings = Field(
        default_factory=WebSocketSettings  # type: ignore[arg-type]
    )
    query: QuerySettings = Field(default_factory=QuerySettings)  # type: ignore[arg-type]
    async_queries: AsyncQuerySettings = Field(
        default_factory=AsyncQuerySettings  # type: ignore[arg-type]
    )
    rows: RowsSettings = Field(default_factory=RowsSettings)  # type: ignore[arg-type]
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)  # type: ignore[arg-type]
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)  # type: ignore[arg-type]
    redis: RedisSettings = Field(default_factory=RedisSettings)  # type: ignore[arg-type]
    mongodb: MongoSettings = Field(default_factory=MongoSettings)  # type: ignore[arg-type]
    authentication: AuthenticationSettings = Field(
        default_factory=AuthenticationSettings  # type: ignore[arg-type]
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; ``overrides`` are dotted flag values (``http.port``)."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        target = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    if config_file is not None:
        if not config_file.is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")

        class _FromFile(Settings):
            model_config = SettingsConfigDict(yaml_file=str(config_file))

        return _FromFile(**nested)
    return Settings(**nested)


def iter_fields(model: type[BaseModel] = Settings, prefix: str = "") -> list[tuple[str, str]]:
    """Every leaf setting as (dotted name, help text), for docs and `config show`."""
    out: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(iter_fields(annotation, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", field.description or ""))
    return out


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data with every secret replaced by ``***``."""
    return _plain(settings, lambda secret: "***")


def revealed(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets included: only for a pipe to a
    process of the same node (``Settings.model_validate`` reads it back as it was)."""
    return _plain(settings, SecretStr.get_secret_value)


def _plain(settings: Settings, secret: Callable[[SecretStr], str]) -> dict[str, Any]:
    data = settings.model_dump(mode="json")

    def walk(node: Any, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr):
                node[name] = secret(value)
            elif isinstance(value, BaseModel):
                walk(node[name], value)

    walk(data, settings)
    return data
