from __future__ import annotations

import pytest

from heliosdb.engine.quoting import qualified, quote_ident
from heliosdb.errors import HeliosError


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("users", '"users"'),
        ('we"ird', '"we""ird"'),
        ("Robert'); DROP TABLE students;--", '"Robert\'); DROP TABLE students;--"'),
        ("ünïcode", '"ünïcode"'),
    ],
)
def test_quote_ident_quotes_like_postgres(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


@pytest.mark.parametrize("name", ["", "a\x00b", "x" * 64])
def test_quote_ident_rejects_impossible_names(name: str) -> None:
    with pytest.raises(HeliosError):
        quote_ident(name)


def test_qualified_quotes_both_parts() -> None:
    assert qualified("public", 'a"b') == '"public"."a""b"'
