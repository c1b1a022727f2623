"""The Principal every request resolves to before it touches data."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from heliosdb.engine.roles import Access


class PrincipalKind(enum.StrEnum):
    API_KEY = "api_key"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    name: str
    kind: PrincipalKind
    access: Access  # READ_WRITE or READ_ONLY: the engine role its statements run as
    is_admin: bool = False
    tier: str = "developer"
    expires_at: dt.datetime | None = None  # when the credential stops being valid, if ever

    @property
    def read_only(self) -> bool:
        return self.access is Access.READ_ONLY
