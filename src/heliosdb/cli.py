"""The ``heliosdb`` command: arguments -> Settings -> node.

heliosdb serve          start a node (embedded engine unless --engine-url)
heliosdb keys create    create an API key and print it once
heliosdb keys list      list keys (never the keys themselves)
heliosdb keys revoke ID revoke a key
heliosdb users create U create a user for wire-protocol logins (password on stdin)
heliosdb users list     list users
heliosdb users delete U delete a user
heliosdb config show    print the effective configuration, secrets masked
heliosdb changes prune  run the change-event retention sweep now
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from heliosdb import __version__
from heliosdb.engine.datadir import DataDirInUse
from heliosdb.engine.embedded import EngineStartError
from heliosdb.errors import HeliosError
from heliosdb.observability import logs
from heliosdb.security.apikeys import KeyKind
from heliosdb.services.container import Services
from heliosdb.settings import Settings, load_settings, masked
from heliosdb.workers import share_metrics

# flag -> dotted setting
_FLAGS = {
    "data_dir": "data_dir",
    "engine_url": "engine.url",
    "http_port": "http.port",
    "workers": "workers",
    "pg_port": "postgres.port",
    "pg_txn_port": "postgres.transaction_port",
    "grpc_port": "grpc.port",
    "ws_port": "websocket.port",
    "redis_port": "redis.port",
    "mongo_port": "mongodb.port",
    "host": "host",
    "environment": "environment",
    "log_level": "log_level",
    "query_timeout": "engine.query_timeout",
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (default: ./heliosdb.yaml)")
    parser.add_argument("--data-dir", type=Path, help="node data directory")
    parser.add_argument("--engine-url", help="postgresql:// URL of an external engine")
    parser.add_argument("--environment", choices=["production", "development", "test"])
    parser.add_argument("--log-level", choices=list(logs.LEVELS))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heliosdb", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"heliosdb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start a node")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, help="REST port (default 8080; 0 = any free)")
    serve.add_argument(
        "--workers",
        type=int,
        help="processes serving REST, WebSocket, Redis and PostgreSQL (default 1)",
    )
    serve.add_argument("--query-timeout", type=float, help="per-statement timeout, seconds")
    serve.add_argument(
        "--pg-port", type=int, help="PostgreSQL wire port (default 5432; 0 = any free)"
    )
    serve.add_argument(
        "--pg-txn-port", type=int, help="PostgreSQL port with transaction pooling (0 = any free)"
    )
    serve.add_argument("--grpc-port", type=int, help="gRPC port (default 50051; 0 = any free)")
    serve.add_argument("--ws-port", type=int, help="WebSocket port (default 8081; 0 = any free)")
    serve.add_argument("--redis-port", type=int, help="Redis port (default 6379; 0 = any free)")
    serve.add_argument(
        "--mongo-port", type=int, help="MongoDB wire port (default 27017; 0 = any free)"
    )

    commands.add_parser("worker", help="internal: a worker process of `serve` (settings on stdin)")
    commands.add_parser(
        "capture", help="internal: the change-capture process of `serve` (settings on stdin)"
    )

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it once")
    _common(create)
    create.add_argument("--name", required=True)
    create.add_argument("--kind", choices=[k.value for k in KeyKind], default="secret")
    create.add_argument("--admin", action="store_true", help="may manage keys")
    create.add_argument(
        "--tier", choices=["free", "developer", "professional", "enterprise"], default="developer"
    )
    create.add_argument(
        "--expires-in", type=float, metavar="SECONDS", help="the key expires this long from now"
    )
    _common(key_commands.add_parser("list", help="list keys"))
    revoke = key_commands.add_parser("revoke", help="revoke a key")
    _common(revoke)
    revoke.add_argument("key_id")

    users = commands.add_parser("users", help="manage users (wire-protocol password logins)")
    user_commands = users.add_subparsers(dest="users_command", required=True)
    create_user = user_commands.add_parser(
        "create", help="create a user; the password is read from stdin (or prompted)"
    )
    _common(create_user)
    create_user.add_argument("username")
    create_user.add_argument("--read-only", action="store_true", help="may only read data")
    create_user.add_argument(
        "--md5",
        action="store_true",
        help="also store an MD5 verifier (PostgreSQL clients limited to MD5, "
        "postgres.auth_method: md5)",
    )
    _common(user_commands.add_parser("list", help="list users"))
    delete_user = user_commands.add_parser("delete", help="delete a user")
    _common(delete_user)
    delete_user.add_argument("username")

    changes = commands.add_parser("changes", help="captured change events")
    change_commands = changes.add_subparsers(dest="changes_command", required=True)
    prune = change_commands.add_parser(
        "prune",
        help="remove events older than the retention window now (the leader does this every 10 s)",
    )
    _common(prune)
    prune.add_argument(
        "--retention-seconds",
        type=float,
        help="keep events committed this recently (default: changes.retention_seconds)",
    )

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the effective configuration")
    _common(show)
    show.add_argument("--host")
    show.add_argument("--http-port", type=int)
    show.add_argument("--query-timeout", type=float)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        dotted: getattr(args, flag) for flag, dotted in _FLAGS.items() if hasattr(args, flag)
    }
    return load_settings(args.config, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        return _worker()
    if args.command == "capture":
        return _capture()
    try:
        settings = settings_from(args)
        logs.configure(settings.log_level)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "keys":
            return asyncio.run(_keys(args, settings))
        if args.command == "users":
            return asyncio.run(_users(args, settings))
        if args.command == "changes":
            return asyncio.run(_changes(args, settings))
        if args.command == "config":
            sys.stdout.write(yaml.safe_dump(masked(settings), sort_keys=False))
            return 0
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"heliosdb: invalid configuration: {exc}\n")
        return 2
    except (DataDirInUse, EngineStartError, HeliosError, OSError) as exc:
        sys.stderr.write(f"heliosdb: {exc}\n")
        return 1
    return 2


def _serve(settings: Settings) -> int:
    import uvloop

    share_metrics(settings)  # before heliosdb.node imports prometheus_client
    from heliosdb.node import Node

    uvloop.run(Node(settings).run())
    return 0


def _worker() -> int:
    import uvloop

    from heliosdb.node import worker_node

    worker = worker_node()
    logs.configure(worker.settings.log_level)
    uvloop.run(worker.run())
    return 0


def _capture() -> int:
    import uvloop

    from heliosdb.capture_process import capture_settings, run_capture

    settings = capture_settings()
    logs.configure(settings.log_level)
    uvloop.run(run_capture(settings))
    return 0


def _read_password() -> str:
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\r\n")


async def _users(args: argparse.Namespace, settings: Settings) -> int:
    from heliosdb.engine import Access
    from heliosdb.node import with_services

    password = _read_password() if args.users_command == "create" else ""

    async def work(services: Services) -> None:
        if args.users_command == "create":
            access = Access.READ_ONLY if args.read_only else Access.READ_WRITE
            principal = await services.users.create(
                args.username, password, access=access, md5=args.md5
            )
            sys.stdout.write(f"created user {principal.name} ({access.value})\n")
        elif args.users_command == "list":
            for row in await services.users.list():
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
        elif args.users_command == "delete":
            await services.users.delete(args.username)
            sys.stdout.write(f"deleted user {args.username}\n")

    await with_services(settings, work)
    return 0


async def _changes(args: argparse.Namespace, settings: Settings) -> int:
    from heliosdb.node import with_services

    async def work(services: Services) -> None:
        pruned = await services.changes.prune(args.retention_seconds)
        sys.stdout.write(f"pruned through position {pruned}\n")

    await with_services(settings, work)
    return 0


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from heliosdb.node import with_services

    async def work(services: Services) -> None:
        if args.keys_command == "create":
            created = await services.keys.create(
                args.name,
                KeyKind(args.kind),
                is_admin=args.admin,
                tier=args.tier,
                expires_in_seconds=args.expires_in,
            )
            sys.stdout.write(f"id:   {created.id}\nkey:  {created.key}\n")
            if created.expires_at is not None:
                sys.stdout.write(f"expires: {created.expires_at.isoformat()}\n")
            sys.stdout.write("Store the key now: it is not shown again.\n")
        elif args.keys_command == "list":
            for row in await services.keys.list():
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
        elif args.keys_command == "revoke":
            await services.keys.revoke(args.key_id)
            sys.stdout.write(f"revoked {args.key_id}\n")

    await with_services(settings, work)
    return 0
