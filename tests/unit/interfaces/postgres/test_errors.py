"""Every HeliosError code has a SQLSTATE on the PostgreSQL wire."""

from __future__ import annotations

import re

from heliosdb.errors import ErrorCode
from heliosdb.interfaces.postgres.errors import SQLSTATE


def test_every_error_code_has_a_sqlstate() -> None:
    assert set(SQLSTATE) == set(ErrorCode)
    assert all(re.fullmatch(r"[0-9A-Z]{5}", state) for state in SQLSTATE.values())
