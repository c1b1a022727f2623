"""Redis number rules and glob patterns of the key-value service."""

from __future__ import annotations

import pytest

from heliosdb.errors import HeliosError
from heliosdb.services.keyvalue.numbers import add_int, float_or_none, format_float, int_or_none
from heliosdb.services.keyvalue.service import glob_to_regex


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b"0", 0), (b"-5", -5), (b"9223372036854775807", 2**63 - 1), (b"+1", None),
     (b"01", None), (b" 1", None), (b"1.0", None), (b"9223372036854775808", None), (b"", None)],
)  # fmt: skip
def test_int_or_none(raw: bytes, value: int | None) -> None:
    assert int_or_none(raw) == value


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b"1.5", 1.5), (b"-inf", float("-inf")), (b"+inf", float("inf")), (b"1e3", 1000.0),
     (b"nan", None), (b"1_0", None), (b"x", None), (b".5", 0.5)],
)  # fmt: skip
def test_float_or_none(raw: bytes, value: float | None) -> None:
    assert float_or_none(raw) == value


def test_format_float_is_shortest() -> None:
    assert format_float(3.0) == b"3"
    assert format_float(10.6) == b"10.6"
    assert format_float(float("inf")) == b"inf"
    assert format_float(1e20) == b"1e+20"


def test_add_int_overflow() -> None:
    with pytest.raises(HeliosError):
        add_int(2**63 - 1, 1)


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [(b"a*", b"abc", True), (b"a?c", b"abc", True), (b"a[bx]c", b"abc", True),
     (b"a[^b]c", b"abc", False), (b"a\\*", b"a*", True), (b"a\\*", b"ab", False),
     (b"*", b"", True), (b"h[a-c]llo", b"hbllo", True), (b"[", b"[", True)],
)  # fmt: skip
def test_glob(pattern: bytes, text: bytes, matches: bool) -> None:
    assert bool(glob_to_regex(pattern).match(text)) is matches
