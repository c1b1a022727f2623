"""SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it: verifiers and both ends.

Sans-IO: nothing here reads a socket. ``ServerExchange`` is the server half (HeliosDB
authenticating a client), ``ClientExchange`` the client half (HeliosDB logging in to
the engine). Verifiers use PostgreSQL's own text format, which is also what
``pg_authid`` holds::

    SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>

Passwords are SASLprep-normalised first, as libpq and asyncpg do (raw bytes when the
password is not valid under SASLprep), so a verifier made here matches what they send.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
# MongoDB drivers also speak SCRAM-SHA-1, over the password hex(md5("<user>:mongo:<password>")).
SHA1_MECHANISM = "SCRAM-SHA-1"
_HASHES = {MECHANISM: "sha256", SHA1_MECHANISM: "sha1"}
MECHANISM_PLUS = "SCRAM-SHA-256-PLUS"
BINDING_TYPE = "tls-server-end-point"
DEFAULT_ITERATIONS = 4096
SALT_BYTES = 16
NONCE_BYTES = 18


class ScramError(Exception):
    """The exchange failed: malformed message or wrong proof. Never says which."""


@dataclass(frozen=True, slots=True)
class Verifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes
    mechanism: str = MECHANISM

    def encode(self) -> str:
        b64 = base64.b64encode
        return (
            f"{self.mechanism}${self.iterations}:{b64(self.salt).decode()}$"
            f"{b64(self.stored_key).decode()}:{b64(self.server_key).decode()}"
        )

    @classmethod
    def parse(cls, text: str) -> Verifier:
        try:
            mechanism, params, keys = text.split("$")
            iterations, salt = params.split(":")
            stored, server = keys.split(":")
            if mechanism not in _HASHES:
                raise ValueError(mechanism)
            return cls(
                int(iterations),
                base64.b64decode(salt, validate=True),
                base64.b64decode(stored, validate=True),
                base64.b64decode(server, validate=True),
                mechanism,
            )
        except ValueError as exc:
            raise ScramError("not a SCRAM-SHA-256 verifier") from exc


def saslprep(password: str) -> bytes:
    """RFC 4013 SASLprep, falling back to the raw UTF-8 bytes as PostgreSQL does."""
    raw = password.encode()
    try:
        mapped = "".join(
            " " if stringprep.in_table_c12(ch) else ch
            for ch in password
            if not stringprep.in_table_b1(ch)
        )
        text = unicodedata.normalize("NFKC", mapped)
        if not text:
            return raw
        prohibited = (
            stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
            stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
            stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
        )  # fmt: skip
        if any(check(ch) for ch in text for check in prohibited):
            return raw
        if any(stringprep.in_table_d1(ch) for ch in text):
            if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
                return raw
            if any(stringprep.in_table_d2(ch) for ch in text):
                return raw
        return text.encode()
    except (UnicodeError, ValueError):
        return raw


def _hmac(key: bytes, message: bytes, hash_name: str = "sha256") -> bytes:
    return hmac.digest(key, message, hash_name)


def salted_password(
    password: str, salt: bytes, iterations: int, mechanism: str = MECHANISM
) -> bytes:
    # SCRAM-SHA-1 (MongoDB) takes its password already digested; no SASLprep then.
    data = saslprep(password) if mechanism == MECHANISM else password.encode()
    return hashlib.pbkdf2_hmac(_HASHES[mechanism], data, salt, iterations)


def mongodb_sha1_password(user: str, password: str) -> str:
    """What MongoDB's SCRAM-SHA-1 uses as the password: hex(md5("<user>:mongo:<pw>"))."""
    return hashlib.md5(f"{user}:mongo:{password}".encode(), usedforsecurity=False).hexdigest()


def make_verifier(
    password: str,
    *,
    salt: bytes | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    mechanism: str = MECHANISM,
) -> Verifier:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    salted = salted_password(password, salt, iterations, mechanism)
    hash_name = _HASHES[mechanism]
    client_key = _hmac(salted, b"Client Key", hash_name)
    return Verifier(
        iterations,
        salt,
        hashlib.new(hash_name, client_key).digest(),
        _hmac(salted, b"Server Key", hash_name),
        mechanism,
    )


def _attributes(message: str) -> list[tuple[str, str]]:
    out = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM attribute")
        out.append((part[0], part[2:]))
    return out


class ServerExchange:
    """The server side of one SCRAM-SHA-256 exchange.

    ``binding`` is the tls-server-end-point data of the server certificate when the
    connection is TLS and the server offered SCRAM-SHA-256-PLUS; ``plus`` says the client
    chose the PLUS mechanism (RFC 5802 section 6 consistency rules apply).

    ``first(client_first)`` returns server-first; ``final(client_final, candidates)``
    returns the index of the verifier in ``candidates`` that the proof matches (the
    caller knows which principal each belongs to) and the server-final message. All
    candidates share the salt and iteration count announced in server-first.
    """

    def __init__(
        self,
        salt: bytes,
        iterations: int,
        *,
        binding: bytes | None = None,
        plus: bool = False,
        mechanism: str = MECHANISM,
    ) -> None:
        self.salt = salt
        self.iterations = iterations
        self.hash_name = _HASHES[mechanism]
        self.binding = binding
        self.plus = plus
        self._binding_data = b""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._gs2 = ""

    def first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode()
        except UnicodeDecodeError as exc:
            raise ScramError("client-first is not UTF-8") from exc
        # gs2 header: cbind flag, optional authzid, then the bare message.
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("malformed client-first")
        flag, authzid, bare = parts
        if authzid:
            raise ScramError("authzid is not supported")
        if self.plus:
            # The PLUS mechanism demands binding data of the one type we implement.
            if flag != f"p={BINDING_TYPE}" or self.binding is None:
                raise ScramError("channel binding type not supported")
            self._binding_data = self.binding
        elif flag == "y" and self.binding is not None:
            # The client could bind and thinks we cannot, yet we offered PLUS: a downgrade.
            raise ScramError("channel binding downgrade")
        elif flag not in ("n", "y"):
            raise ScramError("channel binding requires the SCRAM-SHA-256-PLUS mechanism")
        attrs = _attributes(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r" or not attrs[1][1]:
            raise ScramError("malformed client-first")
        if any(name == "m" for name, _ in attrs):
            raise ScramError("SCRAM extensions are not supported")
        self._gs2 = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = attrs[1][1] + base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode()
        salt = base64.b64encode(self.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes, candidates: list[Verifier]) -> tuple[int, bytes]:
        try:
            text = client_final.decode()
        except UnicodeDecodeError as exc:
            raise ScramError("client-final is not UTF-8") from exc
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ScramError("client-final has no proof")
        attrs = dict(_attributes(without_proof))
        expected_binding = base64.b64encode(self._gs2.encode() + self._binding_data).decode()
        if attrs.get("c") != expected_binding or attrs.get("r") != self._nonce:
            raise ScramError("channel binding or nonce mismatch")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError as exc:
            raise ScramError("malformed proof") from exc
        size = hashlib.new(self.hash_name).digest_size
        if len(proof) != size:
            raise ScramError("malformed proof")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        proof_int = int.from_bytes(proof, "big")
        for index, verifier in enumerate(candidates):
            signature = _hmac(verifier.stored_key, auth_message, self.hash_name)
            client_key = (proof_int ^ int.from_bytes(signature, "big")).to_bytes(size, "big")
            digest = hashlib.new(self.hash_name, client_key).digest()
            if hmac.compare_digest(digest, verifier.stored_key):
                server_signature = _hmac(verifier.server_key, auth_message, self.hash_name)
                return index, b"v=" + base64.b64encode(server_signature)
        raise ScramError("wrong password")


@functools.lru_cache(maxsize=64)
def _cached_salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    # HeliosDB logs in to the engine with the same few role passwords, salts and iteration
    # counts again and again; PBKDF2 would cost milliseconds of event-loop time each.
    return salted_password(password, salt, iterations)


class ClientExchange:
    """The client side, for HeliosDB's own logins (the engine roles)."""

    def __init__(self, password: str) -> None:
        self.password = password
        self._nonce = base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode()
        self._client_first_bare = f"n=,r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self._client_first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(_attributes(text))
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i")
        if not nonce.startswith(self._nonce) or salt is None or iterations is None:
            raise ScramError("malformed server-first")
        salted = _cached_salted_password(self.password, base64.b64decode(salt), int(iterations))
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        expected = b"v=" + base64.b64encode(self._server_signature)
        if not hmac.compare_digest(server_final.strip(), expected):
            raise ScramError("the server's signature does not match")


# Signature algorithm OIDs (DER content bytes) -> the hash RFC 5929 tells us to use;
# MD5 and SHA-1 signatures use SHA-256.
_SIGNATURE_HASHES = {
    bytes.fromhex("2a864886f70d010104"): "sha256",  # md5WithRSAEncryption
    bytes.fromhex("2a864886f70d010105"): "sha256",  # sha1WithRSAEncryption
    bytes.fromhex("2a864886f70d01010b"): "sha256",  # sha256WithRSAEncryption
    bytes.fromhex("2a864886f70d01010c"): "sha384",  # sha384WithRSAEncryption
    bytes.fromhex("2a864886f70d01010d"): "sha512",  # sha512WithRSAEncryption
    bytes.fromhex("2a8648ce3d040301"): "sha256",  # ecdsa-with-SHA1
    bytes.fromhex("2a8648ce3d040302"): "sha256",  # ecdsa-with-SHA256
    bytes.fromhex("2a8648ce3d040303"): "sha384",  # ecdsa-with-SHA384
    bytes.fromhex("2a8648ce3d040304"): "sha512",  # ecdsa-with-SHA512
}


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER item at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return tag, pos, pos + length


def server_end_point(certificate_der: bytes) -> bytes | None:
    """tls-server-end-point binding data (RFC 5929) of a certificate, or None when its
    signature algorithm has no defined hash (then SCRAM-SHA-256-PLUS is not offered)."""
    try:
        _, start, _ = _der_item(certificate_der, 0)  # Certificate SEQUENCE
        _, _, tbs_end = _der_item(certificate_der, start)  # tbsCertificate
        _, alg_start, _ = _der_item(certificate_der, tbs_end)  # signatureAlgorithm
        tag, oid_start, oid_end = _der_item(certificate_der, alg_start)
    except IndexError:
        return None
    name = _SIGNATURE_HASHES.get(certificate_der[oid_start:oid_end]) if tag == 0x06 else None
    return hashlib.new(name, certificate_der).digest() if name else None
