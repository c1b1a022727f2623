"""String operators of aggregation expressions: trimming, ``$regexMatch``/``$regexFind``,
``$replaceOne``/``$replaceAll``, ``$strcasecmp``, ``$indexOfCP`` and ``$strLenBytes``.
Regular expressions are Python's with MongoDB's option letters (``i m s x``)."""

from __future__ import annotations

import re
from typing import Any

from bson.regex import Regex

from heliosdb.errors import invalid
from heliosdb.services.documents.expression_scope import (
    Operator,
    Scope,
    is_number,
    nullish,
    number,
    operands,
    spec,
)

# what $trim removes without chars: whitespace (ASCII and Unicode spaces) and NUL
_WHITESPACE = " \t\n\r\v\f\0\u00a0" + "".join(chr(c) for c in range(0x2000, 0x200B))
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def _text(value: Any, name: str, what: str = "input") -> str:
    if not isinstance(value, str):
        raise invalid(
            f"{name} requires its {what} to be a string, not {type(value).__name__}",
            kind="type_mismatch",
        )
    return value


def _trim(name: str, left: bool, right: bool) -> Operator:
    def operator(arg: Any, scope: Scope) -> Any:
        spec(name, arg, ("input",), ("chars",))
        value = scope(arg["input"])
        chars = scope(arg["chars"]) if "chars" in arg else None
        if nullish(value) or ("chars" in arg and nullish(chars)):
            return None
        text = _text(value, name)
        # without chars: whitespace and the null character, as MongoDB trims
        strip = _WHITESPACE if chars is None else _text(chars, name, "chars")
        if left and right:
            return text.strip(strip)
        return text.lstrip(strip) if left else text.rstrip(strip)

    return operator


def _pattern(name: str, arg: Any, scope: Scope) -> tuple[str | None, re.Pattern[str] | None]:
    spec(name, arg, ("input", "regex"), ("options",))
    value, regex = scope(arg["input"]), scope(arg["regex"])
    options = scope(arg["options"]) if "options" in arg else ""
    if nullish(value) or nullish(regex):
        return None, None
    text = _text(value, name)
    if isinstance(regex, Regex):
        source, flags_text = regex.pattern, regex.flags
        if isinstance(flags_text, int):
            return text, re.compile(source, flags_text)
        if options and flags_text:
            raise invalid(f"{name}: options set in both 'regex' and 'options'", kind="bad_value")
        options = options or flags_text
    elif isinstance(regex, re.Pattern):
        return text, regex
    else:
        source = _text(regex, name, "regex")
    flags = 0
    for letter in options or "":
        if letter not in _FLAGS:
            raise invalid(f"{name}: invalid flag in regex options: {letter}", kind="bad_value")
        flags |= _FLAGS[letter]
    try:
        return text, re.compile(source, flags)
    except re.error as exc:
        raise invalid(f"{name}: invalid regular expression: {exc}", kind="bad_value") from None


def _regex_match(arg: Any, scope: Scope) -> Any:
    text, pattern = _pattern("$regexMatch", arg, scope)
    return False if pattern is None or text is None else pattern.search(text) is not None


def _found(match: re.Match[str]) -> dict[str, Any]:
    return {
        "match": match.group(0),
        "idx": match.start(),
        "captures": list(match.groups()),
    }


def _regex_find(arg: Any, scope: Scope) -> Any:
    text, pattern = _pattern("$regexFind", arg, scope)
    if pattern is None or text is None:
        return None
    match = pattern.search(text)
    return None if match is None else _found(match)


def _regex_find_all(arg: Any, scope: Scope) -> Any:
    text, pattern = _pattern("$regexFindAll", arg, scope)
    if pattern is None or text is None:
        return []
    return [_found(m) for m in pattern.finditer(text)]


def _replace(name: str, count: int) -> Operator:
    def operator(arg: Any, scope: Scope) -> Any:
        spec(name, arg, ("input", "find", "replacement"))
        values = [scope(arg[k]) for k in ("input", "find", "replacement")]
        if any(nullish(v) for v in values):
            return None
        text, find, replacement = (
            _text(v, name, k) for v, k in zip(values, ("input", "find", "replacement"), strict=True)
        )
        return text.replace(find, replacement, count)

    return operator


def _strcasecmp(arg: Any, scope: Scope) -> Any:
    a, b = ("" if nullish(v) else str(v) for v in operands("$strcasecmp", scope.args(arg), 2))
    a, b = a.upper(), b.upper()
    return (a > b) - (a < b)


def _index_of_cp(arg: Any, scope: Scope) -> Any:
    values = operands("$indexOfCP", scope.args(arg), 2, 4)
    if nullish(values[0]):
        return None
    text = _text(values[0], "$indexOfCP", "first argument")
    find = _text(values[1], "$indexOfCP", "second argument")
    bounds = []
    for value in values[2:]:
        if isinstance(value, bool) or not is_number(value) or number(value) < 0:
            raise invalid("$indexOfCP: indexes must be non-negative integers", kind="bad_value")
        bounds.append(int(number(value)))
    start = bounds[0] if bounds else 0
    end = bounds[1] if len(bounds) > 1 else len(text)
    return text.find(find, start, end) if start <= end else -1


def _str_len_bytes(arg: Any, scope: Scope) -> Any:
    (value,) = operands("$strLenBytes", scope.args(arg), 1)
    return len(_text(value, "$strLenBytes", "argument").encode())


OPERATORS: dict[str, Operator] = {
    "$trim": _trim("$trim", True, True),
    "$ltrim": _trim("$ltrim", True, False),
    "$rtrim": _trim("$rtrim", False, True),
    "$regexMatch": _regex_match,
    "$regexFind": _regex_find,
    "$regexFindAll": _regex_find_all,
    "$replaceOne": _replace("$replaceOne", 1),
    "$replaceAll": _replace("$replaceAll", -1),
    "$strcasecmp": _strcasecmp,
    "$indexOfCP": _index_of_cp,
    "$strLenBytes": _str_len_bytes,
}
