"""Date operators of aggregation expressions: parts of a date, ``$dateToString``,
``$dateFromString``, ``$toDate``, ``$dateAdd``/``$dateSubtract``, ``$dateDiff`` and
``$dateTrunc``, with MongoDB's time zones (an Olson name or a UTC offset) and its
calendar rules (weeks from Sunday or ISO weeks, month ends clamped when adding)."""

from __future__ import annotations

import calendar
import datetime as dt
import re
import zoneinfo
from typing import Any

from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from heliosdb.errors import invalid
from heliosdb.services.documents.expression_scope import (
    Operator,
    Scope,
    is_number,
    nullish,
    number,
    spec,
)

_OFFSET = re.compile(r"^([+-])(\d{2})(?::?(\d{2}))?$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_REFERENCE = dt.datetime(2000, 1, 1)  # $dateTrunc's bins count from it (local time)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_UNITS = ("year", "quarter", "month", "week", "day", "hour", "minute", "second", "millisecond")
_FIXED_UNITS = {
    "week": dt.timedelta(weeks=1),
    "day": dt.timedelta(days=1),
    "hour": dt.timedelta(hours=1),
    "minute": dt.timedelta(minutes=1),
    "second": dt.timedelta(seconds=1),
    "millisecond": dt.timedelta(milliseconds=1),
}
DEFAULT_FORMAT = "%Y-%m-%dT%H:%M:%S.%LZ"


def _zone(value: Any) -> dt.tzinfo:
    if nullish(value):
        return dt.UTC
    if not isinstance(value, str):
        raise invalid("timezone must evaluate to a string", kind="failed_to_parse")
    offset = _OFFSET.match(value)
    if offset:
        sign, hours, minutes = offset.groups()
        delta = dt.timedelta(hours=int(hours), minutes=int(minutes or 0))
        return dt.timezone(-delta if sign == "-" else delta)
    if value in ("UTC", "GMT", "Z"):
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise invalid(
            f'unrecognized time zone identifier: "{value}"', kind="failed_to_parse"
        ) from None


def as_date(value: Any, name: str) -> dt.datetime | None:
    """A date operand (a date, a Timestamp or an ObjectId) in UTC; None for null."""
    if nullish(value):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    if isinstance(value, Timestamp):
        return value.as_datetime()
    if isinstance(value, ObjectId):
        return value.generation_time
    kind = (
        "date (outside Python's range)" if isinstance(value, DatetimeMS) else type(value).__name__
    )
    raise invalid(f"{name}: can't convert from BSON type {kind} to Date", kind="type_mismatch")


def _utc(local: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """A naive local time in ``zone`` as a UTC date (MongoDB's results are UTC)."""
    return local.replace(tzinfo=zone).astimezone(dt.UTC)


def _part_operand(name: str, arg: Any, scope: Scope) -> tuple[dt.datetime | None, dt.tzinfo]:
    """``$month: <date>``, ``$month: [<date>]`` or ``$month: {date, timezone}``."""
    if isinstance(arg, dict) and not next(iter(arg), "$").startswith("$"):
        spec(name, arg, ("date",), ("timezone",))
        return as_date(scope(arg["date"]), name), _zone(scope(arg.get("timezone")))
    values = scope.args(arg)
    if len(values) != 1:
        raise invalid(f"{name} takes exactly 1 argument", kind="bad_value")
    return as_date(values[0], name), dt.UTC


def _part(read: Any) -> Operator:
    def operator(arg: Any, scope: Scope, name: str = "") -> Any:
        date, zone = _part_operand(name, arg, scope)
        return None if date is None else read(date.astimezone(zone))

    return operator


_PARTS = {
    "$year": lambda d: d.year,
    "$month": lambda d: d.month,
    "$dayOfMonth": lambda d: d.day,
    "$hour": lambda d: d.hour,
    "$minute": lambda d: d.minute,
    "$second": lambda d: d.second,
    "$millisecond": lambda d: d.microsecond // 1000,
    "$dayOfYear": lambda d: d.timetuple().tm_yday,
    "$dayOfWeek": lambda d: d.isoweekday() % 7 + 1,  # Sunday 1 .. Saturday 7
    "$week": lambda d: int(d.strftime("%U")),  # weeks from Sunday, 0 before the first
    "$isoWeek": lambda d: d.isocalendar()[1],
    "$isoWeekYear": lambda d: Int64(d.isocalendar()[0]),
    "$isoDayOfWeek": lambda d: d.isoweekday(),
}


def _offset_text(local: dt.datetime) -> tuple[str, int]:
    offset = local.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{rest:02d}", minutes


def _minutes_text(local: dt.datetime) -> str:
    minutes = _offset_text(local)[1]
    return f"{'-' if minutes < 0 else '+'}{abs(minutes)}"


# MongoDB's format specifiers (%w is Sunday 1 .. Saturday 7, %u Monday 1 .. Sunday 7)
_SPECIFIERS: dict[str, Any] = {
    "Y": lambda d: f"{d.year:04d}",
    "m": lambda d: f"{d.month:02d}",
    "d": lambda d: f"{d.day:02d}",
    "H": lambda d: f"{d.hour:02d}",
    "M": lambda d: f"{d.minute:02d}",
    "S": lambda d: f"{d.second:02d}",
    "L": lambda d: f"{d.microsecond // 1000:03d}",
    "j": lambda d: f"{d.timetuple().tm_yday:03d}",
    "w": lambda d: str(d.isoweekday() % 7 + 1),
    "u": lambda d: str(d.isoweekday()),
    "U": lambda d: d.strftime("%U"),
    "V": lambda d: f"{d.isocalendar()[1]:02d}",
    "G": lambda d: f"{d.isocalendar()[0]:04d}",
    "z": lambda d: _offset_text(d)[0],
    "Z": _minutes_text,
    "b": lambda d: calendar.month_abbr[d.month],
    "B": lambda d: calendar.month_name[d.month],
    "%": lambda d: "%",
}


def format_date(local: dt.datetime, fmt: str) -> str:
    """``local`` written with MongoDB's format specifiers."""
    out: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] != "%":
            out.append(fmt[i])
            i += 1
            continue
        if i + 1 >= len(fmt):
            raise invalid("Unmatched '%' at end of format string", kind="failed_to_parse")
        write = _SPECIFIERS.get(fmt[i + 1])
        if write is None:
            raise invalid(
                f"Invalid format character '%{fmt[i + 1]}' in format string",
                kind="failed_to_parse",
            )
        out.append(write(local))
        i += 2
    return "".join(out)


def _date_to_string(arg: Any, scope: Scope) -> Any:
    spec("$dateToString", arg, ("date",), ("format", "timezone", "onNull"))
    value = scope(arg["date"])
    if nullish(value):
        return scope(arg["onNull"]) if "onNull" in arg else None
    date = as_date(value, "$dateToString")
    assert date is not None
    fmt = scope(arg["format"]) if "format" in arg else None
    if nullish(fmt):
        if "format" in arg:
            return None
        fmt = DEFAULT_FORMAT if "timezone" not in arg else "%Y-%m-%dT%H:%M:%S.%L"
    if not isinstance(fmt, str):
        raise invalid("$dateToString requires that 'format' be a string", kind="failed_to_parse")
    zone_value = scope(arg.get("timezone"))
    if "timezone" in arg and nullish(zone_value):
        return None
    return format_date(date.astimezone(_zone(zone_value)), fmt)


_PARSE_PARTS = {
    "Y": r"(?P<Y>\d{4})",
    "m": r"(?P<m>\d{1,2})",
    "d": r"(?P<d>\d{1,2})",
    "H": r"(?P<H>\d{1,2})",
    "M": r"(?P<M>\d{1,2})",
    "S": r"(?P<S>\d{1,2})",
    "L": r"(?P<L>\d{1,3})",
    "j": r"(?P<j>\d{1,3})",
    "z": r"(?P<z>[+-]\d{2}:?\d{2})",
    "Z": r"(?P<Z>[+-]\d{1,4})",
    "%": "%",
}


def parse_date(text: str, fmt: str | None, zone: dt.tzinfo) -> dt.datetime:
    """``text`` as a date: ISO 8601 without ``fmt``, else with MongoDB's specifiers
    (``%Y %m %d %H %M %S %L %j %z %Z``); a time without an offset is in ``zone``."""
    if fmt is None:
        try:
            parsed = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise invalid(
                f"Error parsing date string '{text}'", kind="conversion_failure"
            ) from None
        if parsed.tzinfo is None:
            return _utc(parsed, zone)
        return parsed.astimezone(dt.UTC)
    pattern, i = [], 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt) and fmt[i + 1] in _PARSE_PARTS:
            pattern.append(_PARSE_PARTS[fmt[i + 1]])
            i += 2
        elif fmt[i] == "%":
            raise invalid(f"Invalid format character in '{fmt}'", kind="failed_to_parse")
        else:
            pattern.append(re.escape(fmt[i]))
            i += 1
    found = re.fullmatch("".join(pattern), text)
    if found is None:
        raise invalid(
            f"Error parsing date string '{text}' with format '{fmt}'", kind="conversion_failure"
        )
    parts = {k: v for k, v in found.groupdict().items() if v is not None}
    try:
        if "j" in parts:
            local = dt.datetime(int(parts.get("Y", 1970)), 1, 1) + dt.timedelta(
                days=int(parts["j"]) - 1
            )
        else:
            local = dt.datetime(
                int(parts.get("Y", 1970)), int(parts.get("m", 1)), int(parts.get("d", 1))
            )
        local = local.replace(
            hour=int(parts.get("H", 0)),
            minute=int(parts.get("M", 0)),
            second=int(parts.get("S", 0)),
            microsecond=int(parts.get("L", "0").ljust(3, "0")) * 1000,
        )
    except ValueError:
        raise invalid(f"Error parsing date string '{text}'", kind="conversion_failure") from None
    if "z" in parts:
        zone = _zone(parts["z"][:3] + ":" + parts["z"][-2:])
    elif "Z" in parts:
        zone = dt.timezone(dt.timedelta(minutes=int(parts["Z"])))
    return _utc(local, zone)


def _date_from_string(arg: Any, scope: Scope) -> Any:
    spec("$dateFromString", arg, ("dateString",), ("format", "timezone", "onError", "onNull"))
    text = scope(arg["dateString"])
    if nullish(text):
        return scope(arg["onNull"]) if "onNull" in arg else None
    try:
        if not isinstance(text, str):
            raise invalid(
                "$dateFromString requires that 'dateString' be a string, found: "
                f"{type(text).__name__}",
                kind="conversion_failure",
            )
        fmt = scope(arg["format"]) if "format" in arg else None
        if "format" in arg and nullish(fmt):
            return None
        return parse_date(text, fmt, _zone(scope(arg.get("timezone"))))
    except Exception:
        if "onError" in arg:
            return scope(arg["onError"])
        raise


def to_date(value: Any) -> Any:
    """``$toDate``'s conversion: numbers are milliseconds since the epoch."""
    if nullish(value):
        return None
    if isinstance(value, str):
        return parse_date(value, None, dt.UTC)
    if isinstance(value, bool):
        raise invalid(
            "Unsupported conversion from bool to date in $convert", kind="conversion_failure"
        )
    if is_number(value):
        return _EPOCH + dt.timedelta(milliseconds=float(number(value)))
    return as_date(value, "$toDate")


def _to_date(arg: Any, scope: Scope) -> Any:
    values = scope.args(arg)
    if len(values) != 1:
        raise invalid("$toDate takes exactly 1 argument", kind="bad_value")
    return to_date(values[0])


def _unit(value: Any, name: str) -> str:
    if value not in _UNITS:
        raise invalid(f"{name}: unknown time unit value: {value}", kind="failed_to_parse")
    return str(value)


def _whole(value: Any, name: str, field: str) -> int:
    if isinstance(value, bool) or not is_number(value) or number(value) != int(number(value)):
        raise invalid(f"{name} requires '{field}' to be an integer", kind="type_mismatch")
    return int(number(value))


def _add_months(local: dt.datetime, months: int) -> dt.datetime:
    total = local.year * 12 + local.month - 1 + months
    year, month = divmod(total, 12)
    day = min(local.day, calendar.monthrange(year, month + 1)[1])  # Jan 31 + 1 month: Feb 28/29
    return local.replace(year=year, month=month + 1, day=day)


def add_to_date(date: dt.datetime, unit: str, amount: int, zone: dt.tzinfo) -> dt.datetime:
    if unit in ("hour", "minute", "second", "millisecond"):
        return date + _FIXED_UNITS[unit] * amount  # a duration, whatever the clock says
    local = date.astimezone(zone).replace(tzinfo=None)
    if unit in ("day", "week"):
        local += _FIXED_UNITS[unit] * amount  # calendar days: the same local time
    else:
        local = _add_months(local, amount * {"year": 12, "quarter": 3, "month": 1}[unit])
    return _utc(local, zone)


def _date_add(arg: Any, scope: Scope, name: str = "$dateAdd") -> Any:
    spec(name, arg, ("startDate", "unit", "amount"), ("timezone",))
    start, unit, amount = scope(arg["startDate"]), scope(arg["unit"]), scope(arg["amount"])
    zone_value = scope(arg.get("timezone"))
    if (
        nullish(start)
        or nullish(unit)
        or nullish(amount)
        or ("timezone" in arg and nullish(zone_value))
    ):
        return None
    date = as_date(start, name)
    assert date is not None
    steps = _whole(amount, name, "amount")
    if name == "$dateSubtract":
        steps = -steps
    try:
        return add_to_date(date, _unit(unit, name), steps, _zone(zone_value))
    except OverflowError:
        raise invalid(f"{name} overflowed", kind="bad_value") from None


def _start_of_week(value: Any, name: str) -> int:
    """Monday 0 .. Sunday 6, from a day's name or its first three letters."""
    if nullish(value):
        return 6  # Sunday
    names = [w[:3] for w in _WEEKDAYS]
    if not isinstance(value, str) or value.lower()[:3] not in names:
        raise invalid(f"{name}: unknown startOfWeek value: {value}", kind="failed_to_parse")
    return names.index(value.lower()[:3])


def _week_start(local: dt.datetime, first_day: int) -> dt.datetime:
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - dt.timedelta(days=(midnight.weekday() - first_day) % 7)


def _date_diff(arg: Any, scope: Scope) -> Any:
    name = "$dateDiff"
    spec(name, arg, ("startDate", "endDate", "unit"), ("timezone", "startOfWeek"))
    start, end, unit = scope(arg["startDate"]), scope(arg["endDate"]), scope(arg["unit"])
    if nullish(start) or nullish(end) or nullish(unit):
        return None
    a, b = as_date(start, name), as_date(end, name)
    assert a is not None and b is not None
    unit = _unit(unit, name)
    zone = _zone(scope(arg.get("timezone")))
    la, lb = a.astimezone(zone).replace(tzinfo=None), b.astimezone(zone).replace(tzinfo=None)
    if unit == "year":
        diff = lb.year - la.year
    elif unit == "quarter":
        diff = (lb.year * 4 + (lb.month - 1) // 3) - (la.year * 4 + (la.month - 1) // 3)
    elif unit == "month":
        diff = (lb.year * 12 + lb.month) - (la.year * 12 + la.month)
    elif unit == "week":
        first = _start_of_week(scope(arg.get("startOfWeek")), name)
        diff = (_week_start(lb, first) - _week_start(la, first)).days // 7
    elif unit == "day":
        diff = (lb.date() - la.date()).days
    else:  # boundaries of a fixed unit crossed, counted on the instants
        size = _FIXED_UNITS[unit]
        diff = (b - _EPOCH) // size - (a - _EPOCH) // size
    return Int64(diff)


def _date_trunc(arg: Any, scope: Scope) -> Any:
    name = "$dateTrunc"
    spec(name, arg, ("date", "unit"), ("binSize", "timezone", "startOfWeek"))
    value, unit = scope(arg["date"]), scope(arg["unit"])
    bin_value = scope(arg["binSize"]) if "binSize" in arg else 1
    if nullish(value) or nullish(unit) or nullish(bin_value):
        return None
    date = as_date(value, name)
    assert date is not None
    unit = _unit(unit, name)
    size = _whole(bin_value, name, "binSize")
    if size <= 0:
        raise invalid(f"{name} requires 'binSize' to be greater than 0", kind="bad_value")
    zone = _zone(scope(arg.get("timezone")))
    local = date.astimezone(zone).replace(tzinfo=None)
    if unit in ("year", "quarter", "month"):
        months = {"year": 12, "quarter": 3, "month": 1}[unit] * size
        since = (local.year - _REFERENCE.year) * 12 + local.month - 1
        start = _add_months(_REFERENCE, since // months * months)
    elif unit == "week":
        first = _start_of_week(scope(arg.get("startOfWeek")), name)
        reference = _week_start(_REFERENCE, first)
        weeks = (_week_start(local, first) - reference).days // 7
        start = reference + dt.timedelta(weeks=weeks // size * size)
    else:
        step = _FIXED_UNITS[unit] * size
        start = _REFERENCE + (local - _REFERENCE) // step * step
    return _utc(start, zone)


def _named(operator: Any, name: str) -> Operator:
    return lambda arg, scope: operator(arg, scope, name)


OPERATORS: dict[str, Operator] = {
    **{name: _named(_part(read), name) for name, read in _PARTS.items()},
    "$dateToString": _date_to_string,
    "$dateFromString": _date_from_string,
    "$toDate": _to_date,
    "$dateAdd": _named(_date_add, "$dateAdd"),
    "$dateSubtract": _named(_date_add, "$dateSubtract"),
    "$dateDiff": _date_diff,
    "$dateTrunc": _date_trunc,
}
