"""Calendar rules of the date operators that the integration tests do not reach: time
zone changes, leap years, bins and formats."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from heliosdb.errors import HeliosError
from heliosdb.services.documents.date_expressions import (
    add_to_date,
    format_date,
    parse_date,
    to_date,
)

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def test_a_day_added_across_a_clock_change_keeps_the_local_time() -> None:
    before = dt.datetime(2024, 3, 9, 17, tzinfo=dt.UTC)  # 12:00 in New York, EST
    after = add_to_date(before, "day", 1, NEW_YORK)
    assert after.astimezone(NEW_YORK).hour == 12  # EDT now: 23 hours later
    assert after - before == dt.timedelta(hours=23)
    assert add_to_date(before, "hour", 24, NEW_YORK) - before == dt.timedelta(hours=24)


def test_months_keep_the_day_or_take_the_last_one() -> None:
    jan31 = dt.datetime(2023, 1, 31, tzinfo=dt.UTC)
    assert add_to_date(jan31, "month", 1, dt.UTC) == dt.datetime(2023, 2, 28, tzinfo=dt.UTC)
    assert add_to_date(jan31, "quarter", -1, dt.UTC) == dt.datetime(2022, 10, 31, tzinfo=dt.UTC)
    leap = dt.datetime(2024, 2, 29, tzinfo=dt.UTC)
    assert add_to_date(leap, "year", 1, dt.UTC) == dt.datetime(2025, 2, 28, tzinfo=dt.UTC)


def test_formats_and_parses_agree() -> None:
    when = dt.datetime(2021, 12, 31, 23, 59, 58, 7000, tzinfo=dt.UTC)
    text = format_date(when, "%Y-%m-%dT%H:%M:%S.%L%z")
    assert text == "2021-12-31T23:59:58.007+0000"
    assert parse_date(text, "%Y-%m-%dT%H:%M:%S.%L%z", dt.UTC) == when
    assert format_date(when, "%G-W%V-%u %j %b %B") == "2021-W52-5 365 Dec December"


@pytest.mark.parametrize("bad", ["%Q", "trailing %"])
def test_unknown_specifiers_are_errors(bad: str) -> None:
    with pytest.raises(HeliosError):
        format_date(dt.datetime(2021, 1, 1, tzinfo=dt.UTC), bad)


def test_to_date_reads_numbers_as_milliseconds() -> None:
    assert to_date(-1) == dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)
    assert to_date(None) is None
    with pytest.raises(HeliosError):
        to_date(True)
