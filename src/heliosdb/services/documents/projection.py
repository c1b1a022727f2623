"""find() projections applied to decoded documents: inclusion, exclusion, $slice,
$elemMatch and the positional ``field.$``."""

from __future__ import annotations

from typing import Any

from heliosdb.services.documents.filters import bad_value
from heliosdb.services.documents.matcher import matches_elem, value_matches


def check(spec: dict[str, Any] | None) -> None:
    if not spec:
        return
    kinds = set()
    for key, value in spec.items():
        if key == "_id" or isinstance(value, dict):
            continue
        kinds.add(bool(value) if isinstance(value, (bool, int, float)) else True)
    if len(kinds) > 1:
        raise invalid_projection("Cannot do exclusion and inclusion in one projection")


def invalid_projection(message: str) -> Exception:
    return bad_value(message)


def project(
    doc: dict[str, Any], spec: dict[str, Any] | None, query: dict[str, Any] | None = None
) -> dict[str, Any]:
    if not spec:
        return doc
    include_id = bool(spec.get("_id", 1))
    plain = {k: v for k, v in spec.items() if k != "_id"}
    inclusive = any(
        (isinstance(v, dict) and "$elemMatch" in v) or (not isinstance(v, dict) and bool(v))
        for v in plain.values()
    )
    if not plain:
        if include_id:
            return {"_id": doc["_id"]} if "_id" in doc else {}
        return {k: v for k, v in doc.items() if k != "_id"}
    if inclusive:
        out: dict[str, Any] = {}
        if include_id and "_id" in doc:
            out["_id"] = doc["_id"]
        for key in doc:
            for path, rule in plain.items():
                head = path.split(".")[0]
                if head != key:
                    continue
                _include(out, doc, path.split("."), rule, query)
        return out
    out = dict(doc)
    if not include_id:
        out.pop("_id", None)
    for path, rule in plain.items():
        if isinstance(rule, dict):
            _operator(out, doc, path.split("."), rule, query)
        else:
            _exclude(out, path.split("."))
    return out


def _include(
    out: dict[str, Any],
    doc: dict[str, Any],
    parts: list[str],
    rule: Any,
    query: dict[str, Any] | None,
) -> None:
    key = parts[0]
    if key not in doc:
        return
    value = doc[key]
    if len(parts) == 1 or (len(parts) == 2 and parts[1] == "$"):
        if isinstance(rule, dict):
            _operator(out, doc, parts, rule, query)
        elif len(parts) == 2 and isinstance(value, list):
            spec = (query or {}).get(key)
            hit = [e for e in value if spec is None or value_matches(e, spec)][:1]
            out[key] = hit
        else:
            out[key] = value
        return
    if isinstance(value, dict):
        target = out.setdefault(key, {})
        if isinstance(target, dict):
            _include(target, value, parts[1:], rule, query)
    elif isinstance(value, list):
        target = out.setdefault(key, [{} for e in value if isinstance(e, dict)])
        items = [e for e in value if isinstance(e, dict)]
        for sub_out, sub in zip(target, items, strict=False):
            _include(sub_out, sub, parts[1:], rule, query)


def _exclude(out: dict[str, Any], parts: list[str]) -> None:
    key = parts[0]
    if key not in out:
        return
    if len(parts) == 1:
        del out[key]
        return
    value = out[key]
    if isinstance(value, dict):
        value = dict(value)
        _exclude(value, parts[1:])
        out[key] = value
    elif isinstance(value, list):
        items = []
        for e in value:
            if isinstance(e, dict):
                e = dict(e)
                _exclude(e, parts[1:])
            items.append(e)
        out[key] = items


def _operator(
    out: dict[str, Any],
    doc: dict[str, Any],
    parts: list[str],
    rule: dict[str, Any],
    query: dict[str, Any] | None,
) -> None:
    key = parts[0]
    value = doc.get(key)
    if "$slice" in rule:
        arg = rule["$slice"]
        if not isinstance(value, list):
            if key in doc:
                out[key] = value
            return
        if isinstance(arg, list):
            skip, limit = int(arg[0]), int(arg[1])
            start = skip if skip >= 0 else max(len(value) + skip, 0)
            out[key] = value[start : start + limit]
        else:
            n = int(arg)
            out[key] = value[:n] if n >= 0 else value[n:]
    elif "$elemMatch" in rule:
        if isinstance(value, list):
            hit = [e for e in value if matches_elem(e, rule["$elemMatch"])][:1]
            if hit:
                out[key] = hit
            else:
                out.pop(key, None)
        else:
            out.pop(key, None)
    else:
        raise bad_value(f"Unsupported projection option: {key}: {rule}")
