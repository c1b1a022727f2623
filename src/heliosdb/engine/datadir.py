"""The node's data directory: its layout, its exclusive lock and its secret files.

<data_dir>/
  node.lock        flock()ed by the running node: two nodes never share a directory
  engine/          PGDATA of the embedded engine
  run/             the engine's Unix socket (no TCP listener)
  engine.password  the engine superuser's password (0600)
  admin.key        the first admin API key, written once (0600)
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path
from typing import IO


class DataDirInUse(RuntimeError):
    pass


class DataDir:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self._lock_file: IO[str] | None = None

    @property
    def pgdata(self) -> Path:
        return self.root / "engine"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def engine_password_file(self) -> Path:
        return self.root / "engine.password"

    @property
    def admin_key_file(self) -> Path:
        return self.root / "admin.key"

    def lock(self) -> None:
        """Take the directory for this process, or fail clearly if another node has it."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock_path = self.root / "node.lock"
        handle = open(lock_path, "a+")  # noqa: SIM115 - held for the node's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DataDirInUse(
                f"data directory {self.root} is in use by another HeliosDB node (pid {holder}); "
                "give this node its own --data-dir, or share the engine with --engine-url"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def read_or_create_secret(self, path: Path) -> str:
        if path.exists():
            return path.read_text().strip()
        value = secrets.token_urlsafe(32)
        write_secret(path, value)
        return value


def write_secret(path: Path, value: str) -> None:
    """Write a file only its owner can read, without a moment of wider permissions."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    os.chmod(path, 0o600)
