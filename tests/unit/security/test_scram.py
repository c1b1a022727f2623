"""SCRAM-SHA-256 both ends, checked against RFC 7677's example and against each other."""

from __future__ import annotations

import base64

import pytest

from heliosdb.security import scram
from heliosdb.security.scram import ClientExchange, ScramError, ServerExchange, Verifier


def test_rfc7677_example_proof_and_signature() -> None:
    # RFC 7677 section 3: user "user", password "pencil".
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram.make_verifier("pencil", salt=salt, iterations=4096)
    server = ServerExchange(salt, 4096)
    server._nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    server._client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    server._server_first = f"r={server._nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    server._gs2 = "n,,"
    index, final = server.final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        [verifier],
    )
    assert index == 0
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_verifier_round_trips_postgres_format() -> None:
    verifier = scram.make_verifier("secret")
    text = verifier.encode()
    assert text.startswith("SCRAM-SHA-256$4096:")
    assert Verifier.parse(text) == verifier
    with pytest.raises(ScramError):
        Verifier.parse("md5abcdef")


def _exchange(password: str, verifiers: list[Verifier]) -> int:
    client = ClientExchange(password)
    server = ServerExchange(verifiers[0].salt, verifiers[0].iterations)
    server_first = server.first(client.first())
    index, final = server.final(client.final(server_first), verifiers)
    client.verify(final)
    return index


def test_exchange_finds_the_matching_candidate() -> None:
    salt = b"shared-salt-1234"
    verifiers = [scram.make_verifier(p, salt=salt) for p in ("one", "two", "three")]
    assert _exchange("three", verifiers) == 2
    with pytest.raises(ScramError):
        _exchange("four", verifiers)


def test_saslprep_maps_spaces_and_keeps_invalid_raw() -> None:
    assert scram.saslprep("a\u00a0b") == b"a b"
    assert scram.saslprep("I\u00adX") == b"IX"  # soft hyphen maps to nothing
    assert scram.saslprep("\u0007bell") == "\u0007bell".encode()  # prohibited: raw bytes


@pytest.mark.parametrize(
    "client_first",
    [b"", b"p=tls-server-end-point,,n=,r=abc", b"n,a=admin,n=,r=abc", b"n,,r=abc", b"\xff"],
)
def test_server_rejects_bad_client_first(client_first: bytes) -> None:
    with pytest.raises(ScramError):
        ServerExchange(b"salt", 4096).first(client_first)


def test_server_rejects_tampered_final() -> None:
    verifier = scram.make_verifier("pw", salt=b"salt")
    client = ClientExchange("pw")
    server = ServerExchange(verifier.salt, verifier.iterations)
    final = client.final(server.first(client.first()))
    for bad in (final.replace(b"c=biws", b"c=eSws"), final[:-4] + b"AAA=", b"c=biws", b"junk"):
        with pytest.raises(ScramError):
            server.final(bad, [verifier])


def test_plus_mechanism_requires_binding_and_matching_data() -> None:
    verifier = scram.make_verifier("pw", salt=b"salt")
    binding = b"\x01" * 32
    client = ClientExchange("pw")
    server = ServerExchange(verifier.salt, 4096, binding=binding, plus=True)
    bare = client.first()[3:]
    server_first = server.first(b"p=tls-server-end-point,," + bare)
    # The proof covers the binding, so a client-final from a plain exchange fails...
    with pytest.raises(ScramError):
        server.final(client.final(server_first), [verifier])
    # ...and the plus mechanism refuses a client that does not bind.
    with pytest.raises(ScramError):
        ServerExchange(b"salt", 4096, binding=binding, plus=True).first(b"n,," + bare)


def test_plus_offered_but_client_says_y_is_a_downgrade() -> None:
    server = ServerExchange(b"salt", 4096, binding=b"\x02" * 32, plus=False)
    with pytest.raises(ScramError):
        server.first(b"y,,n=,r=abc")
    assert ServerExchange(b"salt", 4096).first(b"y,,n=,r=abc").startswith(b"r=abc")


def test_server_end_point_of_unknown_signature_is_none() -> None:
    assert scram.server_end_point(b"\x30\x03\x02\x01\x00") is None
