"""Stage timestamps of the change pipeline, for ``bench/realtime.py --stages``.

Off unless the environment variable ``HELIOSDB_CHANGES_STAGES`` names a file prefix. Then
each process appends one line per round (not per event) to ``<prefix>.<pid>``:

    leader <first position> <last position> <poll> <peek sent> <peek back> <written>
    hub <last position dispatched> <time>
    flush <hub's last position dispatched> <start> <end> <connections written>

Times are wall-clock seconds (``time.time()``), comparable with the engine's commit
timestamps and the benchmark client's kernel receive timestamps on the same machine.
"""

from __future__ import annotations

import os
from typing import IO

_path = os.environ.get("HELIOSDB_CHANGES_STAGES")
_file: IO[str] | None = None


def enabled() -> bool:
    return _path is not None


def record(*fields: object) -> None:
    global _file
    if _path is None:
        return
    if _file is None:
        _file = open(f"{_path}.{os.getpid()}", "a", buffering=1 << 16)  # noqa: SIM115 - open for the process
    _file.write(" ".join(map(str, fields)) + "\n")
    if fields[0] == "flush":
        _file.flush()
