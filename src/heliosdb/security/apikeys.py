"""API key format and hashing.

    hdb_sk_<40 random chars>   secret key: read-write
    hdb_pk_<40 random chars>   public key: read-only
    hdb_test_<40 random chars> test key: read-write, only outside production

A key has 240 bits of randomness, so a single SHA-256 is the right hash for it: a slow
password hash adds nothing against guessing and would cost every request. Only the
hash and a short display form (prefix, first and last four characters) are stored.
"""

from __future__ import annotations

import enum
import hashlib
import secrets


class KeyKind(enum.StrEnum):
    SECRET = "secret"
    PUBLIC = "public"
    TEST = "test"


PREFIXES = {KeyKind.SECRET: "hdb_sk_", KeyKind.PUBLIC: "hdb_pk_", KeyKind.TEST: "hdb_test_"}
RANDOM_CHARS = 40
MAX_KEY_LENGTH = 128


def generate_key(kind: KeyKind) -> str:
    return PREFIXES[kind] + secrets.token_urlsafe(30)[:RANDOM_CHARS]


def kind_of(key: str) -> KeyKind | None:
    for kind, prefix in PREFIXES.items():
        if key.startswith(prefix):
            return kind
    return None


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def display_form(key: str) -> str:
    kind = kind_of(key)
    prefix = PREFIXES[kind] if kind else ""
    body = key[len(prefix) :]
    return f"{prefix}{body[:4]}...{body[-4:]}"
