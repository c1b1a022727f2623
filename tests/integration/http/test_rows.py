"""GET/POST/PUT/DELETE /tables/{name}/rows: filters, order, cursor, writes, refusals, injection."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

PEOPLE: list[dict[str, Any]] = [
    {"name": "ann", "age": 30, "status": "active", "data": {"city": "Oslo", "n": 1}},
    {"name": "bob", "age": None, "status": "inactive", "data": {"city": "Rome", "n": 2}},
    {"name": "cy", "age": 25, "status": "active", "data": {"city": "Oslo", "n": 3}},
    {"name": "dee", "age": 41, "status": "banned", "data": {}},
    {"name": "O'Brien", "age": 30, "status": "active", "data": {"city": "Cork"}},
]


@pytest.fixture
async def people(api: httpx.AsyncClient, table_name: str) -> str:
    body = {
        "name": table_name,
        "columns": [
            {"name": "id", "type": "serial", "primary_key": True},
            {"name": "name", "type": "text", "nullable": False},
            {"name": "age", "type": "int"},
            {"name": "status", "type": "text", "default": "'active'"},
            {"name": "data", "type": "jsonb"},
            {"name": "tags", "type": "text[]"},
            {"name": "created", "type": "timestamptz", "default": "now()"},
        ],
    }
    created = await api.post("/tables", json=body)
    assert created.status_code == 201, created.text
    inserted = await api.post(f"/tables/{table_name}/rows", json=PEOPLE)
    assert inserted.status_code == 201, inserted.text
    return table_name


async def names(api: httpx.AsyncClient, table: str, params: Any = None) -> list[str]:
    response = await api.get(f"/tables/{table}/rows", params=params)
    assert response.status_code == 200, response.text
    return [row["name"] for row in response.json()["rows"]]


async def count(api: httpx.AsyncClient, table: str) -> int:
    response = await api.get(f"/tables/{table}/rows", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


# -- reads ----------------------------------------------------------------------------


async def test_read_all_rows_in_primary_key_order(api: httpx.AsyncClient, people: str) -> None:
    response = await api.get(f"/tables/{people}/rows")
    assert response.status_code == 200
    body = response.json()
    assert [r["name"] for r in body["rows"]] == [p["name"] for p in PEOPLE]
    assert body["count"] == 5 and body["next_cursor"] is None
    assert body["rows"][0]["data"] == {"city": "Oslo", "n": 1}
    assert body["rows"][0]["status"] == "active"
    assert {c["name"] for c in body["columns"]} >= {"id", "name", "age", "data"}


async def test_read_select_columns(api: httpx.AsyncClient, people: str) -> None:
    response = await api.get(f"/tables/{people}/rows", params={"select": "name,age", "limit": 1})
    assert response.json()["rows"] == [{"name": "ann", "age": 30}]
    assert [c["name"] for c in response.json()["columns"]] == ["name", "age"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"age": "eq.30"}, ["ann", "O'Brien"]),
        ({"age": "neq.30"}, ["cy", "dee"]),
        ({"age": "gt.30"}, ["dee"]),
        ({"age": "gte.30"}, ["ann", "dee", "O'Brien"]),
        ({"age": "lt.30"}, ["cy"]),
        ({"age": "lte.30"}, ["ann", "cy", "O'Brien"]),
        ({"name": "like.*n*"}, ["ann", "O'Brien"]),
        ({"name": "ilike.o*"}, ["O'Brien"]),
        ({"name": "in.(ann,cy,nobody)"}, ["ann", "cy"]),
        ({"name": "not.in.(ann,cy)"}, ["bob", "dee", "O'Brien"]),
        ({"age": "is.null"}, ["bob"]),
        ({"age": "not.is.null", "status": "eq.active"}, ["ann", "cy", "O'Brien"]),
        ({"status": "not.eq.active"}, ["bob", "dee"]),
        ({"name": "eq.O'Brien"}, ["O'Brien"]),
        ({"or": "(age.gt.40,name.eq.bob)"}, ["bob", "dee"]),
        ({"or": "(age.is.null,and(age.lt.30,status.eq.active))"}, ["bob", "cy"]),
        ({"not.or": "(age.is.null,age.gte.30)"}, ["cy"]),
        ({"data->>city": "eq.Oslo"}, ["ann", "cy"]),
        ({"data->n": "eq.2"}, ["bob"]),
        ({"data": 'cs.{"city":"Rome"}'}, ["bob"]),
        ({"where": "age > 26 AND lower(name) <> 'dee'"}, ["ann", "O'Brien"]),
        ({"where": "coalesce(age, 0) = 0 OR data->>'city' = 'Cork'"}, ["bob", "O'Brien"]),
        ({"where": "age BETWEEN 20 AND 29"}, ["cy"]),
        ({"where": "name IN ('ann', 'bob') AND age IS NULL"}, ["bob"]),
        ({"where": "created <= now() AND status ILIKE 'ACT%' AND age >= 30"}, ["ann", "O'Brien"]),
        ({"where": "status = 'active'", "age": "lt.30"}, ["cy"]),
    ],
)
async def test_read_filters(
    api: httpx.AsyncClient, people: str, params: dict[str, str], expected: list[str]
) -> None:
    assert await names(api, people, params) == expected


async def test_read_repeated_filters_are_anded(api: httpx.AsyncClient, people: str) -> None:
    params = [("age", "gte.25"), ("age", "lt.41")]
    assert await names(api, people, params) == ["ann", "cy", "O'Brien"]


async def test_read_by_pk(api: httpx.AsyncClient, people: str) -> None:
    assert await names(api, people, {"pk": "2"}) == ["bob"]


async def test_read_order(api: httpx.AsyncClient, people: str) -> None:
    assert await names(api, people, {"order": "age.desc,name"}) == [
        "bob", "dee", "O'Brien", "ann", "cy",
    ]  # fmt: skip
    assert await names(api, people, {"order": "age.desc.nullslast,name.desc"}) == [
        "dee", "ann", "O'Brien", "cy", "bob",
    ]  # fmt: skip
    assert await names(api, people, {"order": "age.asc.nullsfirst,name"}) == [
        "bob", "cy", "O'Brien", "ann", "dee",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "order",
    [
        None,
        "age.desc",
        "age.asc.nullsfirst",
        "age.desc.nullslast,name",
        "status,age.desc",
        "created.desc,name",
        "created,name.desc",
    ],
)
async def test_read_cursor_pages_through_everything_once(
    api: httpx.AsyncClient, people: str, order: str | None
) -> None:
    whole = await names(api, people, {"order": order} if order else None)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2}
        if order:
            params["order"] = order
        if cursor:
            params["cursor"] = cursor
        response = await api.get(f"/tables/{people}/rows", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [r["name"] for r in body["rows"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == whole


async def test_read_cursor_without_primary_key_uses_offset(
    api: httpx.AsyncClient, table_name: str
) -> None:
    await api.post("/tables", json={"name": table_name, "columns": [{"name": "v", "type": "int"}]})
    await api.post(f"/tables/{table_name}/rows", json=[{"v": i} for i in range(5)])
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2, "order": "v"}
    while True:
        body = (await api.get(f"/tables/{table_name}/rows", params=params)).json()
        seen += [r["v"] for r in body["rows"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [0, 1, 2, 3, 4]


async def test_read_cursor_with_other_order_is_refused(api: httpx.AsyncClient, people: str) -> None:
    first = (await api.get(f"/tables/{people}/rows", params={"limit": 1})).json()
    response = await api.get(
        f"/tables/{people}/rows",
        params={"limit": 1, "order": "age", "cursor": first["next_cursor"]},
    )
    assert response.status_code == 400
    assert "order" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "100001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"select": "name,nope"}, "unknown column"),
        ({"order": "nope"}, "unknown column"),
        ({"order": "age.sideways"}, "order modifier"),
        ({"nope": "eq.1"}, "unknown column"),
        ({"age": "zz.1"}, "unknown filter operator"),
        ({"age": "eq"}, "operator.value"),
        ({"age": "eq.abc"}, "not a valid int4"),
        ({"age": "is.maybe"}, "is."),
        ({"or": "age.eq.1"}, "parenthesised"),
        ({"where": "age > (SELECT 1)"}, "subquery"),
        ({"where": "pg_sleep(5) IS NULL"}, "pg_sleep"),
        ({"where": "age = 1; DROP TABLE x"}, "';'"),
        ({"where": "age = 1 --"}, "comments"),
        ({"where": "name::regclass IS NULL"}, "regclass"),
        ({"where": ""}, "non-empty"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        (
            {"cursor": base64.urlsafe_b64encode(b'{"v":1,"o":"id:a:l","p":[{"x":1}]}').decode()},
            "int4",
        ),
        ({"pk": "abc"}, "not a valid int4"),
    ],
)
async def test_read_rejects_bad_parameters(
    api: httpx.AsyncClient, people: str, params: dict[str, str], fragment: str
) -> None:
    response = await api.get(f"/tables/{people}/rows", params=params)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


async def test_read_unknown_table_is_not_found(api: httpx.AsyncClient) -> None:
    response = await api.get("/tables/no_such_table_here/rows")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


async def test_duplicate_control_parameters_are_refused(
    api: httpx.AsyncClient, people: str
) -> None:
    response = await api.get(f"/tables/{people}/rows", params=[("limit", "1"), ("limit", "2")])
    assert response.status_code == 400


# -- inserts --------------------------------------------------------------------------


async def test_insert_one_returns_row_with_defaults(api: httpx.AsyncClient, people: str) -> None:
    response = await api.post(
        f"/tables/{people}/rows", json={"name": "eve", "tags": ["a", "b"], "data": [1, "x"]}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["affected_rows"] == 1
    (row,) = body["rows"]
    assert row["name"] == "eve" and row["status"] == "active" and row["tags"] == ["a", "b"]
    assert row["data"] == [1, "x"] and row["id"] == 6 and row["created"].endswith("+00:00")


async def test_insert_many_with_different_keys(api: httpx.AsyncClient, people: str) -> None:
    response = await api.post(
        f"/tables/{people}/rows",
        json=[{"name": "f1"}, {"name": "f2", "status": "x"}, {"age": 3, "name": "f3"}],
    )
    assert response.status_code == 201, response.text
    rows = response.json()["rows"]
    assert [(r["name"], r["status"], r["age"]) for r in rows] == [
        ("f1", "active", None),
        ("f2", "x", None),
        ("f3", "active", 3),
    ]


async def test_insert_return_minimal(api: httpx.AsyncClient, people: str) -> None:
    response = await api.post(
        f"/tables/{people}/rows", params={"return": "minimal"}, json=[{"name": "g"}]
    )
    assert response.status_code == 201
    assert response.json() == {"affected_rows": 1}


async def test_insert_many_rows_in_one_request(api: httpx.AsyncClient, table_name: str) -> None:
    await api.post(
        "/tables",
        json={
            "name": table_name,
            "columns": [
                {"name": "id", "type": "int", "primary_key": True},
                {"name": "v", "type": "text"},
            ],
        },
    )
    rows = [{"id": i, "v": f"v{i}"} for i in range(5000)]
    response = await api.post(f"/tables/{table_name}/rows", params={"return": "minimal"}, json=rows)
    assert response.status_code == 201, response.text
    assert response.json()["affected_rows"] == 5000


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"nope": 1}, 400, "unknown column"),
        ({"name": None}, 400, "null value"),
        ({"name": "x", "age": "old"}, 400, "int4"),
        ([], 400, "non-empty array"),
        ([1, 2], 400, "objects"),
        ("text", 400, "objects"),
        ({"id": 1, "name": "dup"}, 409, "duplicate key"),
    ],
)
async def test_insert_rejects_bad_rows(
    api: httpx.AsyncClient, people: str, body: Any, status: int, fragment: str
) -> None:
    response = await api.post(f"/tables/{people}/rows", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]
    assert await count(api, people) == 5


async def test_insert_batch_is_atomic(api: httpx.AsyncClient, people: str) -> None:
    response = await api.post(
        f"/tables/{people}/rows", json=[{"name": "ok"}, {"name": "bad", "age": "x"}]
    )
    assert response.status_code == 400
    response = await api.post(
        f"/tables/{people}/rows", json=[{"name": "ok"}, {"id": 1, "name": "d"}]
    )
    assert response.status_code == 409
    assert await count(api, people) == 5


async def test_insert_malformed_json(api: httpx.AsyncClient, people: str) -> None:
    response = await api.post(f"/tables/{people}/rows", content=b"{nope")
    assert response.status_code == 400
    assert (await api.post(f"/tables/{people}/rows")).status_code == 400


async def test_insert_returns_selected_columns(api: httpx.AsyncClient, people: str) -> None:
    response = await api.post(
        f"/tables/{people}/rows", params={"select": "id,name"}, json={"name": "h"}
    )
    assert response.json()["rows"] == [{"id": 6, "name": "h"}]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("POST", {"name": "eq.x"}),
        ("POST", {"all": "true"}),
        ("POST", {"order": "name"}),
        ("PUT", {"pk": "1", "limit": "1"}),
        ("PUT", {"pk": "1", "order": "name"}),
        ("DELETE", {"pk": "1", "cursor": "abc"}),
        ("PUT", {"pk": "1", "select": "nope", "return": "representation"}),
    ],
)
async def test_writes_refuse_parameters_that_do_not_apply(
    api: httpx.AsyncClient, people: str, method: str, params: dict[str, str]
) -> None:
    body = None if method == "DELETE" else b'{"name": "x"}'
    response = await api.request(method, f"/tables/{people}/rows", params=params, content=body)
    assert response.status_code == 400, response.text
    assert await names(api, people) == [p["name"] for p in PEOPLE]


# -- updates and deletes --------------------------------------------------------------


async def test_update_by_filter_counts_rows(api: httpx.AsyncClient, people: str) -> None:
    response = await api.put(f"/tables/{people}/rows", params={"age": "eq.30"}, json={"age": 31})
    assert response.status_code == 200, response.text
    assert response.json() == {"affected_rows": 2}
    assert await names(api, people, {"age": "eq.31"}) == ["ann", "O'Brien"]


async def test_update_by_pk_returns_representation(api: httpx.AsyncClient, people: str) -> None:
    response = await api.put(
        f"/tables/{people}/rows",
        params={"pk": "2", "return": "representation"},
        json={"status": "active", "data": {"k": [1, 2]}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["affected_rows"] == 1
    assert body["rows"][0]["status"] == "active" and body["rows"][0]["data"] == {"k": [1, 2]}


async def test_update_with_prefer_header(api: httpx.AsyncClient, people: str) -> None:
    response = await api.put(
        f"/tables/{people}/rows",
        params={"where": "name = 'cy'", "select": "name,age"},
        json={"age": 26},
        headers={"Prefer": "return=representation"},
    )
    assert response.json()["rows"] == [{"name": "cy", "age": 26}]


async def test_update_all_needs_all_true(api: httpx.AsyncClient, people: str) -> None:
    refused = await api.put(f"/tables/{people}/rows", json={"status": "x"})
    assert refused.status_code == 400
    assert "refusing" in refused.json()["error"]["message"]
    assert await names(api, people, {"status": "eq.x"}) == []
    allowed = await api.put(f"/tables/{people}/rows", params={"all": "true"}, json={"status": "x"})
    assert allowed.json()["affected_rows"] == 5


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "JSON object"),
        ([1], "JSON object"),
        ({"nope": 1}, "unknown column"),
        ({"age": "x"}, "int4"),
    ],
)
async def test_update_rejects_bad_bodies(
    api: httpx.AsyncClient, people: str, body: Any, fragment: str
) -> None:
    response = await api.put(f"/tables/{people}/rows", params={"pk": "1"}, json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


async def test_delete_by_filter_and_pk(api: httpx.AsyncClient, people: str) -> None:
    response = await api.delete(f"/tables/{people}/rows", params={"status": "eq.inactive"})
    assert response.json() == {"affected_rows": 1}
    response = await api.delete(
        f"/tables/{people}/rows", params={"pk": "1", "return": "representation"}
    )
    assert response.json()["rows"][0]["name"] == "ann"
    assert await names(api, people) == ["cy", "dee", "O'Brien"]


async def test_delete_all_needs_all_true(api: httpx.AsyncClient, people: str) -> None:
    refused = await api.delete(f"/tables/{people}/rows")
    assert refused.status_code == 400
    assert await count(api, people) == 5
    both = await api.delete(f"/tables/{people}/rows", params={"all": "true", "pk": "1"})
    assert both.status_code == 400
    allowed = await api.delete(f"/tables/{people}/rows", params={"all": "true"})
    assert allowed.json() == {"affected_rows": 5}
    assert await count(api, people) == 0


async def test_composite_primary_key(api: httpx.AsyncClient, table_name: str) -> None:
    await api.post(
        "/tables",
        json={
            "name": table_name,
            "columns": [{"name": "a", "type": "int"}, {"name": "b", "type": "text"}],
            "primary_key": ["a", "b"],
        },
    )
    rows = [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y")]
    await api.post(f"/tables/{table_name}/rows", json=rows)
    seen, params = [], {"limit": "3"}
    while True:
        body = (await api.get(f"/tables/{table_name}/rows", params=params)).json()
        seen += [(r["a"], r["b"]) for r in body["rows"]]
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [(1, "x"), (1, "y"), (2, "x"), (2, "y")]
    deleted = await api.delete(f"/tables/{table_name}/rows", params={"pk": "2,y"})
    assert deleted.json()["affected_rows"] == 1
    assert (await api.delete(f"/tables/{table_name}/rows", params={"pk": "2"})).status_code == 400


# -- privileges -----------------------------------------------------------------------


async def test_read_only_key_reads_but_every_write_is_denied(
    api: httpx.AsyncClient, ro_api: httpx.AsyncClient, people: str
) -> None:
    assert await names(ro_api, people, {"age": "eq.25"}) == ["cy"]
    path = f"/tables/{people}/rows"
    attempts = [
        ro_api.post(path, json={"name": "ro"}),
        ro_api.post(path, json=[{"name": "ro1"}, {"name": "ro2"}]),
        ro_api.put(path, params={"pk": "1"}, json={"name": "ro"}),
        ro_api.put(path, params={"all": "true"}, json={"name": "ro"}),
        ro_api.delete(path, params={"pk": "1"}),
        ro_api.delete(path, params={"all": "true"}),
    ]
    for attempt in attempts:
        response = await attempt
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    assert await names(api, people) == [p["name"] for p in PEOPLE]


# -- injection through every parameter ------------------------------------------------

INJECTIONS = [
    "1; DROP TABLE {t}",
    "1' OR '1'='1",
    "1); DELETE FROM {t}; --",
    '"; DROP TABLE {t}; --',
    "(SELECT 1)",
    "1 UNION SELECT password FROM helios.engine_roles",
    "pg_sleep(5)",
    "$1",
    "{t}.id",
    "\\x00",
]


@pytest.mark.parametrize("template", INJECTIONS)
async def test_injection_through_every_rows_parameter_fails_safely(
    api: httpx.AsyncClient, people: str, template: str
) -> None:
    evil = template.format(t=people)
    path = f"/tables/{people}/rows"
    reads: list[Any] = [
        {"select": evil},
        {"select": f"name,{evil}"},
        {"order": evil},
        {"order": f"name.{evil}"},
        {evil: "eq.1"},
        {"name": f"eq.{evil}"},
        {"name": f"in.({evil},x)"},
        {"name": f"like.{evil}"},
        {"age": f"eq.{evil}"},
        {"or": f"({evil})"},
        {"or": f"(name.eq.{evil},age.eq.{evil})"},
        {"where": evil},
        {"where": f"name = '{evil}'"},
        {"cursor": evil},
        {
            "cursor": base64.urlsafe_b64encode(
                orjson.dumps({"v": 1, "o": "id:a:l", "p": [evil]})
            ).decode()
        },
        {"limit": evil},
        {"pk": evil},
        {"schema": evil},
        {"all": evil},
        {"return": evil},
    ]
    for params in reads:
        response = await api.get(path, params=params)
        assert response.status_code in (200, 400, 404), (params, response.text)
        if response.status_code == 200:
            assert all(
                row["name"] in {p["name"] for p in PEOPLE} for row in response.json()["rows"]
            )
    for name in (evil, f"{people}; DROP TABLE x", f"{people}/rows"):
        response = await api.get(f"/tables/{name}/rows")
        assert response.status_code in (400, 404), response.text
    writes = [
        api.put(path, params={"name": f"eq.{evil}"}, json={"status": evil}),
        api.put(path, params={"where": evil}, json={"status": "x"}),
        api.put(path, params={"pk": "1"}, json={evil: "x"}),
        api.delete(path, params={"name": f"eq.{evil}"}),
        api.delete(path, params={"where": evil}),
        api.delete(path, params={evil: "eq.1"}),
        api.post(path, json={evil: "x"}),
    ]
    for attempt in writes:
        response = await attempt
        assert response.status_code in (200, 400, 404), response.text
        if response.status_code == 200:
            assert response.json()["affected_rows"] == 0
    stored = await api.post(
        path, json={"name": evil, "status": evil}, params={"return": "representation"}
    )
    assert stored.status_code == 201
    assert stored.json()["rows"][0]["name"] == evil
    assert await names(api, people, {"name": f"eq.{evil}"}) == [evil]
    rows = (await api.get(path)).json()["rows"]
    assert [r["name"] for r in rows] == [p["name"] for p in PEOPLE] + [evil]
    assert (await api.get(f"/tables/{people}")).status_code == 200


# -- schema changes under the node's table cache ---------------------------------------


async def sql(api: httpx.AsyncClient, statement: str) -> None:
    response = await api.post("/query", json={"sql": statement})
    assert response.status_code == 200, response.text


async def test_added_column_is_seen_at_once(api: httpx.AsyncClient, people: str) -> None:
    assert await names(api, people, {"limit": 1}) == ["ann"]  # the table is now cached
    await sql(api, f"ALTER TABLE {people} ADD COLUMN nick text DEFAULT 'n'")
    rows = (await api.get(f"/tables/{people}/rows", params={"limit": 1})).json()["rows"]
    assert rows[0]["nick"] == "n"
    inserted = await api.post(f"/tables/{people}/rows", json={"name": "new", "nick": "x"})
    assert inserted.status_code == 201, inserted.text
    assert inserted.json()["rows"][0]["nick"] == "x"
    assert await names(api, people, {"nick": "eq.x"}) == ["new"]


async def test_dropped_column_and_table_are_seen_at_once(
    api: httpx.AsyncClient, people: str
) -> None:
    assert await names(api, people, {"select": "name,age", "limit": 1}) == ["ann"]
    await sql(api, f"ALTER TABLE {people} DROP COLUMN age")
    response = await api.get(f"/tables/{people}/rows", params={"select": "name,age"})
    assert response.status_code == 400
    assert "unknown column" in response.json()["error"]["message"]
    assert "age" not in (await api.get(f"/tables/{people}/rows")).json()["rows"][0]
    await sql(api, f"DROP TABLE {people}")
    assert (await api.get(f"/tables/{people}/rows")).status_code == 404
    assert (await api.post(f"/tables/{people}/rows", json={"name": "x"})).status_code == 404


async def test_recreated_table_is_seen_at_once(api: httpx.AsyncClient, people: str) -> None:
    assert len(await names(api, people)) == 5
    await sql(api, f"DROP TABLE {people}")
    await sql(api, f"CREATE TABLE {people} (name text PRIMARY KEY, score int)")
    inserted = await api.post(f"/tables/{people}/rows", json={"name": "z", "score": 1})
    assert inserted.status_code == 201, inserted.text
    body = (await api.get(f"/tables/{people}/rows")).json()
    assert body["rows"] == [{"name": "z", "score": 1}]
