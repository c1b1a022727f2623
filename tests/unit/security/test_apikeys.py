from __future__ import annotations

from heliosdb.security.apikeys import KeyKind, display_form, generate_key, hash_key, kind_of


def test_generate_key_prefixes_and_uniqueness() -> None:
    assert generate_key(KeyKind.SECRET).startswith("hdb_sk_")
    assert generate_key(KeyKind.PUBLIC).startswith("hdb_pk_")
    assert generate_key(KeyKind.TEST).startswith("hdb_test_")
    assert len({generate_key(KeyKind.SECRET) for _ in range(1000)}) == 1000


def test_kind_of_and_display_form_hide_the_secret() -> None:
    key = generate_key(KeyKind.PUBLIC)
    assert kind_of(key) is KeyKind.PUBLIC
    assert kind_of("sk_live_123") is None
    shown = display_form(key)
    assert shown.startswith("hdb_pk_") and "..." in shown
    assert len(shown) < len(key) - 20


def test_hash_key_is_stable_and_not_the_key() -> None:
    key = generate_key(KeyKind.SECRET)
    assert hash_key(key) == hash_key(key)
    assert key.encode() not in hash_key(key)
    assert len(hash_key(key)) == 32
