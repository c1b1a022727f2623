"""RequestContext: who is asking, through which door, on which connection."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from heliosdb.security.principals import Principal


@dataclass(slots=True)
class RequestContext:
    principal: Principal
    interface: str
    connection_id: str
    peer: str = ""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("heliosdb"))
