"""Connection and server commands: PING, AUTH, HELLO, SELECT, CLIENT, INFO, CONFIG, COMMAND..."""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import os
import platform
import re
import time
from typing import Any

from heliosdb import __version__
from heliosdb.errors import HeliosError
from heliosdb.interfaces.redis import errors
from heliosdb.interfaces.redis.codec import OK, PONG, Map, Status, Verbatim
from heliosdb.interfaces.redis.commands.args import integer, text, word
from heliosdb.interfaces.redis.connection import reset_client
from heliosdb.interfaces.redis.errors import RedisError
from heliosdb.interfaces.redis.registry import COMMANDS, Call, Command, command
from heliosdb.security.apikeys import kind_of
from heliosdb.security.principals import Principal
from heliosdb.security.scram import make_verifier

REDIS_VERSION = "7.4.0"
DATABASES = 16
_NAME_OK = re.compile(rb"[!-~]*\Z")  # printable ASCII, no spaces


@command("ping", -1, "fast pubsub", help="PING [message]")
async def ping(call: Call) -> Any:
    if len(call.args) > 2:
        raise errors.wrong_arity("ping")
    if call.client.subscriber_mode:
        return [b"pong", call.args[1] if len(call.args) > 1 else b""]
    return call.args[1] if len(call.args) > 1 else PONG


@command("echo", 2, "fast")
async def echo(call: Call) -> Any:
    return call.args[1]


@command("quit", -1, "noauth pubsub noqueue fast")
async def quit_(call: Call) -> Any:
    call.client.closing = True
    return OK


@command("reset", 1, "noauth pubsub noqueue fast")
async def reset(call: Call) -> Any:
    reset_client(call.server, call.client)
    if call.session is not None and call.client.principal is None:
        call.session.parser.max_buffer = min(
            call.session.parser.max_buffer, call.server.settings.redis.max_query_buffer_bytes
        )
    return Status("RESET")


@command("select", 2, "fast")
async def select(call: Call) -> Any:
    db = integer(call.args[1])
    if not 0 <= db < DATABASES:
        raise RedisError(errors.DB_OUT_OF_RANGE)
    call.client.db = db
    return OK


async def _authenticate(call: Call, user: bytes | None, password: bytes) -> None:
    """An API key as the password (any user name), or a HeliosDB user and its password."""
    secret = text(password)
    principal: Principal | None = None
    if kind_of(secret) is not None:
        try:
            principal = await call.server.services.keys.authenticate(secret)
        except HeliosError:
            principal = None
    elif user is not None and text(user) not in ("default", "apikey"):
        principal = await _user_login(call, text(user), secret)
    if principal is None:
        raise RedisError(errors.WRONGPASS)
    assert call.session is not None
    call.session.authenticated(principal)


async def _user_login(call: Call, username: str, password: str) -> Principal | None:
    found = await call.server.services.users.verifier(username)
    if found is None:
        return None
    verifier, principal = found
    # PBKDF2 costs milliseconds of CPU: off the event loop.
    candidate = await asyncio.to_thread(
        make_verifier, password, salt=verifier.salt, iterations=verifier.iterations
    )
    if not hmac.compare_digest(candidate.stored_key, verifier.stored_key):
        return None
    return principal


@command("auth", -2, "noauth fast")
async def auth(call: Call) -> Any:
    if len(call.args) > 3:
        raise RedisError(errors.SYNTAX)
    user = call.args[1] if len(call.args) == 3 else None
    await _authenticate(call, user, call.args[-1])
    return OK


@command("hello", -1, "noauth fast")
async def hello(call: Call) -> Any:
    args = call.args[1:]
    proto = call.client.proto
    if args:
        version = integer_or(args[0], errors.NOT_INTEGER.replace("value", "Protocol version"))
        if version not in (2, 3):
            raise RedisError("NOPROTO unsupported protocol version")
        proto = version
        options = args[1:]
        name: bytes | None = None
        i = 0
        while i < len(options):
            option = word(options[i])
            if option == b"AUTH" and i + 2 < len(options):
                await _authenticate(call, options[i + 1], options[i + 2])
                i += 3
            elif option == b"SETNAME" and i + 1 < len(options):
                name = _client_name(options[i + 1])
                i += 2
            else:
                raise RedisError(f"ERR Syntax error in HELLO option '{text(options[i])}'")
        if call.client.principal is None and call.server.require_auth:
            raise RedisError(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise "
                "the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the "
                "client and select the RESP protocol version at the same time"
            )
        if name is not None:
            call.client.name = name or None
    call.client.proto = proto
    return Map(
        [
            (b"server", b"redis"),
            (b"version", REDIS_VERSION.encode()),
            (b"proto", proto),
            (b"id", call.client.id),
            (b"mode", b"standalone"),
            (b"role", b"master"),
            (b"modules", []),
        ]
    )


def integer_or(raw: bytes, message: str) -> int:
    try:
        return integer(raw)
    except RedisError:
        raise RedisError(message) from None


def _client_name(raw: bytes) -> bytes:
    if not _NAME_OK.match(raw):
        raise RedisError("ERR Client names cannot contain spaces, newlines or special characters.")
    return raw


@command("client", -2, "")
async def client(call: Call) -> Any:
    sub = word(call.args[1])
    rest = call.args[2:]
    me = call.client
    if sub == b"ID" and not rest:
        return me.id
    if sub == b"SETNAME" and len(rest) == 1:
        me.name = _client_name(rest[0]) or None
        return OK
    if sub == b"GETNAME" and not rest:
        return me.name
    if sub == b"SETINFO" and len(rest) == 2:
        attribute = word(rest[0])
        if attribute == b"LIB-NAME":
            me.lib_name = _client_name(rest[1])
        elif attribute == b"LIB-VER":
            me.lib_ver = _client_name(rest[1])
        else:
            raise RedisError(f"ERR Unrecognized option '{text(rest[0])}'")
        return OK
    if sub == b"INFO" and not rest:
        return Verbatim(me.info_line() + "\n")
    if sub == b"LIST":
        lines = [c.info_line() + "\n" for c in call.server.clients.values()]
        return Verbatim("".join(lines))
    if sub == b"KILL" and rest:
        return _kill(call, rest)
    if sub in (b"NO-EVICT", b"NO-TOUCH") and len(rest) == 1:
        return OK
    if sub == b"REPLY" and len(rest) == 1:
        return OK
    if sub == b"UNPAUSE" and not rest:
        return OK
    if sub == b"HELP":
        return [s.encode() for s in _CLIENT_HELP]
    if sub in (b"TRACKING", b"CACHING", b"TRACKINGINFO", b"GETREDIR", b"PAUSE"):
        raise RedisError(errors.NOT_SUPPORTED.format(f"CLIENT {sub.decode()}"))
    if sub in (b"ID", b"SETNAME", b"GETNAME", b"SETINFO", b"INFO", b"KILL"):
        raise errors.wrong_arity(f"client|{sub.decode().lower()}")
    raise errors.unknown_subcommand(call.args[1], "client")


_CLIENT_HELP = [
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ID", "GETNAME", "SETNAME <name>", "SETINFO <LIB-NAME|LIB-VER> <value>", "INFO", "LIST",
    "KILL <ID id|ADDR addr|USER user|ip:port>", "NO-EVICT <ON|OFF>", "NO-TOUCH <ON|OFF>",
    "REPLY <ON|OFF|SKIP>", "UNPAUSE",
]  # fmt: skip


def _kill(call: Call, rest: list[bytes]) -> Any:
    targets = list(call.server.clients.values())
    if len(rest) == 1:
        victims = [c for c in targets if c.addr.encode() == rest[0]]
        if not victims:
            raise RedisError("ERR No such client")
    else:
        if len(rest) % 2:
            raise RedisError(errors.SYNTAX)
        victims = targets
        for i in range(0, len(rest), 2):
            option, value = word(rest[i]), rest[i + 1]
            if option == b"ID":
                victims = [c for c in victims if str(c.id).encode() == value]
            elif option == b"ADDR":
                victims = [c for c in victims if c.addr.encode() == value]
            elif option == b"LADDR":
                victims = [c for c in victims if c.laddr.encode() == value]
            elif option == b"USER":
                victims = [c for c in victims if c.principal and c.principal.name.encode() == value]
            elif option == b"SKIPME":
                if word(value) == b"YES":
                    victims = [c for c in victims if c is not call.client]
            else:
                raise RedisError(errors.SYNTAX)
    for victim in victims:
        victim.closing = victim.killed = True
        if victim.writer is not None and victim is not call.client:
            victim.writer.close()
    return OK if len(rest) == 1 else len(victims)


@command("time", 1, "fast")
async def time_(call: Call) -> Any:
    now = time.time_ns() // 1000
    return [str(now // 1_000_000).encode(), str(now % 1_000_000).encode()]


@command("dbsize", 1, "read fast")
async def dbsize(call: Call) -> Any:
    keys, _ = await (await call.tx()).size()
    return keys


@command("flushdb", -1, "write")
async def flushdb(call: Call) -> Any:
    _flush_mode(call.args[1:])
    await (await call.tx()).flush(call.client.db)
    return OK


@command("flushall", -1, "write")
async def flushall(call: Call) -> Any:
    _flush_mode(call.args[1:])
    await (await call.tx()).flush(None)
    return OK


def _flush_mode(args: list[bytes]) -> None:
    if len(args) > 1 or (args and word(args[0]) not in (b"ASYNC", b"SYNC")):
        raise RedisError(errors.SYNTAX)


@command("swapdb", 3, "write")
async def swapdb(call: Call) -> Any:
    a, b = (integer_or(x, "ERR invalid first DB index") for x in call.args[1:3])
    if not (0 <= a < DATABASES and 0 <= b < DATABASES):
        raise RedisError(errors.DB_OUT_OF_RANGE)
    if a != b:
        await (await call.tx()).swap(a, b)
    return OK


@command("lastsave", 1, "fast")
async def lastsave(call: Call) -> Any:
    return int(time.time())


@command("save", 1, "admin")
async def save(call: Call) -> Any:
    return OK  # every acknowledged write is already in the engine


@command("bgsave", -1, "admin")
async def bgsave(call: Call) -> Any:
    return Status("Background saving started")


@command("info", -1, "read")
async def info(call: Call) -> Any:
    wanted = {word(a).decode(errors="replace").lower() for a in call.args[1:]}
    everything = not wanted or wanted & {"all", "everything", "default"}
    sections = await _info_sections(call)
    body = []
    for name, fields in sections.items():
        if everything or name.lower() in wanted:
            body.append(f"# {name}\r\n" + "".join(f"{k}:{v}\r\n" for k, v in fields))
    return Verbatim("\r\n".join(body))


async def _info_sections(call: Call) -> dict[str, list[tuple[str, Any]]]:
    server = call.server
    uptime = int(time.time() - server.started)
    tx = await call.tx()
    keyspace = []
    for db in range(DATABASES):
        keys, expires = await tx.size(db)
        if keys:
            keyspace.append((f"db{db}", f"keys={keys},expires={expires},avg_ttl=0"))
    rss = _rss()
    return {
        "Server": [
            ("redis_version", REDIS_VERSION),
            ("heliosdb_version", __version__),
            ("redis_mode", "standalone"),
            ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
            ("arch_bits", 64),
            ("process_id", os.getpid()),
            ("tcp_port", server.port),
            ("uptime_in_seconds", uptime),
            ("uptime_in_days", uptime // 86400),
            ("executable", "heliosdb"),
        ],
        "Clients": [
            ("connected_clients", len(server.clients)),
            ("maxclients", server.settings.redis.max_clients),
            ("blocked_clients", 0),
        ],
        "Memory": [
            ("used_memory", rss),
            ("used_memory_human", f"{rss / 1048576:.2f}M"),
            ("used_memory_rss", rss),
            ("maxmemory", 0),
            ("maxmemory_policy", "noeviction"),
        ],
        "Persistence": [
            ("loading", 0),
            ("aof_enabled", 1),
            ("rdb_changes_since_last_save", 0),
        ],
        "Stats": [
            ("total_connections_received", server.connections_received),
            ("total_commands_processed", server.commands_processed),
            ("rejected_connections", server.rejected_connections),
            ("pubsub_channels", call.kv.local_channel_count()),
            ("pubsub_patterns", call.kv.local_pattern_count()),
            ("helios_coalesced_batches", call.kv.coalescer.batches),
            ("helios_coalesced_commands", call.kv.coalescer.operations),
            ("helios_pipelined_sets", call.kv.coalescer.pipelined()[0]),
            ("helios_pipelined_gets", call.kv.coalescer.pipelined()[1]),
        ],
        "Replication": [("role", "master"), ("connected_slaves", 0)],
        "Keyspace": keyspace,
    }


def _rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def config_defaults(call_server: Any) -> dict[str, str]:
    redis = call_server.settings.redis
    return {
        "save": "",
        "appendonly": "yes",
        "appendfsync": "always" if redis.durability == "always" else "everysec",
        "databases": str(DATABASES),
        "maxmemory": "0",
        "maxmemory-policy": "noeviction",
        "timeout": str(int(redis.idle_timeout_seconds)),
        "notify-keyspace-events": "",
        "maxclients": str(redis.max_clients),
        "proto-max-bulk-len": str(redis.max_bulk_bytes),
        "port": str(call_server.port),
        "bind": call_server.settings.host,
        "tcp-keepalive": "300",
        "slowlog-log-slower-than": "10000",
        "lua-time-limit": "5000",
        "cluster-enabled": "no",
    }


@command("config", -2, "admin")
async def config(call: Call) -> Any:
    sub = word(call.args[1])
    server = call.server
    if not server.config:
        server.config = config_defaults(server)
    if sub == b"GET" and len(call.args) >= 3:
        patterns = [text(p).lower() for p in call.args[2:]]
        pairs = [
            (name.encode(), value.encode())
            for name, value in sorted(server.config.items())
            if any(fnmatch.fnmatchcase(name, p) for p in patterns)
        ]
        return Map(pairs)
    if sub == b"SET" and len(call.args) >= 4 and len(call.args) % 2 == 0:
        for i in range(2, len(call.args), 2):
            name = text(call.args[i]).lower()
            if name not in server.config:
                raise RedisError(
                    f"ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                )
        for i in range(2, len(call.args), 2):
            server.config[text(call.args[i]).lower()] = text(call.args[i + 1])
        return OK
    if sub in (b"RESETSTAT", b"REWRITE") and len(call.args) == 2:
        return OK
    if sub in (b"GET", b"SET"):
        raise errors.wrong_arity(f"config|{sub.decode().lower()}")
    raise errors.unknown_subcommand(call.args[1], "config")


def command_info(cmd: Command) -> list[Any]:
    return [
        cmd.name.encode(),
        cmd.arity,
        [Status(f) for f in sorted(cmd.flags & {"write", "fast", "admin", "pubsub", "noauth"})],
        cmd.first_key,
        cmd.last_key,
        cmd.step,
        [],
        [],
        [],
        [],
    ]


@command("command", -1, "")
async def command_(call: Call) -> Any:
    if len(call.args) == 1:
        return [command_info(c) for c in COMMANDS.values()]
    sub = word(call.args[1])
    if sub == b"COUNT":
        return len(COMMANDS)
    if sub == b"INFO":
        names = call.args[2:] or [c.encode() for c in COMMANDS]
        return [
            command_info(COMMANDS[n.decode(errors="replace").lower()])
            if n.decode(errors="replace").lower() in COMMANDS
            else None
            for n in names
        ]
    if sub == b"LIST":
        return [c.encode() for c in COMMANDS]
    if sub == b"GETKEYS" and len(call.args) >= 3:
        target = COMMANDS.get(call.args[2].decode(errors="replace").lower())
        if target is None or target.first_key == 0:
            raise RedisError("ERR The command has no key arguments")
        words = call.args[2:]
        last = target.last_key if target.last_key >= 0 else len(words) + target.last_key
        return words[target.first_key : last + 1 : target.step or 1]
    if sub == b"DOCS":
        raise RedisError(errors.NOT_SUPPORTED.format("COMMAND DOCS"))
    raise errors.unknown_subcommand(call.args[1], "command")


@command("readonly", 1, "fast")
async def readonly(call: Call) -> Any:
    raise RedisError("ERR This instance has cluster support disabled")


@command("memory", -2, "read")
async def memory(call: Call) -> Any:
    if word(call.args[1]) == b"USAGE" and len(call.args) >= 3:
        meta = await (await call.tx()).lookup(call.args[2])
        return None if meta is None else 64 + len(call.args[2]) + len(meta.value or b"")
    raise errors.unknown_subcommand(call.args[1], "memory")


for _unsupported in (
    "eval_ro", "evalsha_ro", "function", "fcall", "fcall_ro",
    "xadd", "xread", "xrange", "xrevrange", "xlen", "xgroup", "xreadgroup", "xack",
    "xinfo", "xdel", "xtrim", "cluster", "module", "acl", "monitor", "sync", "psync",
    "replicaof", "slaveof", "failover", "debug", "shutdown", "migrate", "restore", "dump",
    "ssubscribe", "sunsubscribe", "spublish", "waitaof", "latency", "slowlog",
    "geoadd", "geodist", "geopos", "georadius", "geosearch", "pfadd", "pfcount", "pfmerge",
    "setbit", "getbit", "bitcount", "bitop", "bitpos", "bitfield", "sort", "sort_ro",
    "lcs", "hexpire", "hpexpire", "httl", "hpttl", "hpersist",
):  # fmt: skip

    def _make(name: str) -> Any:
        async def unsupported(call: Call) -> Any:
            raise RedisError(errors.NOT_SUPPORTED.format(name.upper()))

        return unsupported

    command(_unsupported, -1, "")(_make(_unsupported))
