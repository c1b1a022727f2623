"""PostgreSQL's MD5 password exchange (protocol auth code 5), for legacy clients.

The stored verifier is PostgreSQL's own ``md5`` + hex(md5(password ‖ user name)), the
format ``pg_authid`` used before SCRAM. The client answers a 4-byte salt with
``md5`` + hex(md5(hex digest of that ‖ salt)). The verifier is bound to one user name
and is enough to log in with MD5 (whoever holds it needs no password), which is why
HeliosDB stores one only for users created with ``--md5``.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "md5"


def md5_verifier(password: str, user: str) -> str:
    return PREFIX + hashlib.md5((password + user).encode()).hexdigest()


def md5_response(verifier: str, salt: bytes) -> str:
    """What a client that knows the password sends for ``salt``."""
    inner = verifier.removeprefix(PREFIX).encode()
    return PREFIX + hashlib.md5(inner + salt).hexdigest()


def md5_matches(verifier: str, salt: bytes, response: str) -> bool:
    return hmac.compare_digest(md5_response(verifier, salt).encode(), response.encode())
