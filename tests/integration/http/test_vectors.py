"""/vectors: indexes, upsert, search recall against brute force, filters, bad input."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from heliosdb.services.vectors import DEFAULTS, default_ef_search

DIM = 32
COUNT = 2000
CATEGORIES = ["shoes", "hats", "bags", "coats"]


def index_name() -> str:
    return f"v_{uuid.uuid4().hex[:10]}"


def clustered(count: int, dim: int, seed: int) -> np.ndarray:
    """Overlapping clusters around 20 centres: closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    points = centres[rng.integers(0, 20, size=count)] + rng.normal(size=(count, dim))
    return points.astype(np.float32)


def brute_force(data: np.ndarray, query: np.ndarray, k: int, metric: str) -> list[int]:
    if metric == "cosine":
        unit = data / np.linalg.norm(data, axis=1, keepdims=True)
        distance = 1 - unit @ (query / np.linalg.norm(query))
    elif metric == "l2":
        distance = np.linalg.norm(data - query, axis=1)
    else:
        distance = -(data @ query)
    return [int(i) for i in np.argsort(distance, kind="stable")[:k]]


async def create(api: httpx.AsyncClient, name: str, **options: Any) -> dict[str, Any]:
    response = await api.post("/vectors/indexes", json={"name": name, "dimension": DIM, **options})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(COUNT, DIM, seed=7)


@pytest.fixture(scope="module")
async def loaded(node: Any, rw_key: str, data: np.ndarray) -> str:
    """One cosine index with COUNT vectors; metadata: category, price (= row number), even."""
    name = index_name()
    async with httpx.AsyncClient(
        base_url=node.api, headers={"Authorization": f"Bearer {rw_key}"}, timeout=120
    ) as api:
        await create(api, name, metadata_fields={"category": "string", "price": "number",
                                                  "even": "boolean"})  # fmt: skip
        vectors = [
            {
                "id": str(i),
                "vector": data[i].tolist(),
                "metadata": {"category": CATEGORIES[i % 4], "price": i, "even": i % 2 == 0},
            }
            for i in range(COUNT)
        ]
        for start in range(0, COUNT, 1000):
            response = await api.post(
                "/vectors/upsert",
                json={"index_name": name, "vectors": vectors[start : start + 1000]},
            )
            assert response.status_code == 200, response.text
    return name


async def search(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/vectors/search", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_vectors_index_create_list_describe_drop(api: httpx.AsyncClient) -> None:
    name = index_name()
    created = await create(api, name, metric="l2", m=8, ef_construction=32, ef_search=50)
    assert created["metric"] == "l2"
    assert created["hnsw"] == {"m": 8, "ef_construction": 32}
    assert created["table"] == f"helios_vectors.{name}"
    listed = (await api.get("/vectors/indexes")).json()["indexes"]
    assert name in [i["name"] for i in listed]
    described = (await api.get(f"/vectors/indexes/{name}")).json()
    assert (described["dimension"], described["count"]) == (DIM, 0)
    duplicate = await api.post("/vectors/indexes", json={"name": name, "dimension": DIM})
    assert duplicate.status_code == 409
    assert (await api.delete(f"/vectors/indexes/{name}")).status_code == 200
    assert (await api.get(f"/vectors/indexes/{name}")).status_code == 404
    assert (await api.delete(f"/vectors/indexes/{name}")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "1abc", "dimension": 3},
        {"name": "a b", "dimension": 3},
        {"name": 'x"; DROP TABLE y; --', "dimension": 3},
        {"name": "ok_name", "dimension": 0},
        {"name": "ok_name", "dimension": 5000},
        {"name": "ok_name", "dimension": "3"},
        {"name": "ok_name", "dimension": 3, "metric": "manhattan"},
        {"name": "ok_name", "dimension": 3, "m": 1},
        {"name": "ok_name", "dimension": 3, "metadata_fields": {"a": "date"}},
        {"name": "ok_name", "dimension": 3, "surprise": 1},
    ],
)
async def test_vectors_index_create_bad_input_rejected(
    api: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await api.post("/vectors/indexes", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_vectors_read_only_key_searches_but_cannot_change(
    ro_api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    created = await ro_api.post("/vectors/indexes", json={"name": index_name(), "dimension": 3})
    assert created.status_code == 403
    upserted = await ro_api.post(
        "/vectors/upsert",
        json={"index_name": loaded, "vectors": [{"id": "x", "vector": [1.0] * DIM}]},
    )
    assert upserted.status_code == 403
    assert (await ro_api.delete(f"/vectors/indexes/{loaded}")).status_code == 403
    found = await search(ro_api, index_name=loaded, vector=data[0].tolist(), top_k=3)
    assert found["results"][0]["id"] == "0"


async def test_vectors_without_credentials_unauthenticated(node: Any) -> None:
    async with httpx.AsyncClient(base_url=node.api) as anonymous:
        response = await anonymous.post("/vectors/search", json={"index_name": "x"})
    assert response.status_code == 401


async def test_vectors_search_recall_against_brute_force(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    queries = clustered(25, DIM, seed=99)
    hits = 0
    for query in queries:
        truth = brute_force(data, query, 10, "cosine")
        found = await search(api, index_name=loaded, vector=query.tolist(), top_k=10)
        assert found["metrics"]["search_path"] == "hnsw"
        ids = [int(r["id"]) for r in found["results"]]
        assert len(ids) == 10
        hits += len(set(ids) & set(truth))
        exact = await search(api, index_name=loaded, vector=query.tolist(), top_k=10, exact=True)
        assert exact["metrics"]["search_path"] == "exact"
        assert [int(r["id"]) for r in exact["results"]] == truth
    assert hits / (10 * len(queries)) >= 0.9


async def test_vectors_search_settings_end_with_the_statement(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    """ef_search and the iterative scan are set inside the search statement, transaction-
    local: the pooled session (kept for the same key without a reset) never keeps them.
    (Each check has its own text: a statement seen before may run on the key's pipelined
    connection instead, engine/pipeline.py, a session the search never used.)"""
    for i in range(8):
        found = await search(
            api, index_name=loaded, vector=data[i].tolist(), top_k=5, ef_search=123,
            filter="category = 'hats'",
        )  # fmt: skip
        assert found["metrics"]["ef_search"] == 123
        response = await api.post(
            "/query",
            json={"sql": "SELECT current_setting('hnsw.ef_search') AS ef, "
                         f"current_setting('hnsw.iterative_scan') AS scan -- {i}"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["rows"][0] == ["40", "off"]


async def test_vectors_default_ef_search_follows_top_k(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    """An index created without ef_search searches with a beam that follows top_k; an
    index's own ef_search and a request's ef_search win over it; the metrics say which."""
    described = (await api.get(f"/vectors/indexes/{loaded}")).json()
    assert described["ef_search"] is None
    assert described["hnsw"]["ef_construction"] == DEFAULTS["ef_construction"]
    vector = data[3].tolist()
    beams = []
    for top_k in (1, 10, 60, 200, 1000):
        found = await search(api, index_name=loaded, vector=vector, top_k=top_k)
        metrics = found["metrics"]
        assert metrics["ef_search_source"] == "default"
        assert metrics["ef_search"] == default_ef_search(top_k) >= top_k
        assert metrics["results"] == top_k
        beams.append(metrics["ef_search"])
    assert beams == sorted(beams) and beams[-1] == 1000 and beams[0] < beams[-1]
    assert beams[1] >= 100  # top 10 never gets less than the old fixed default
    found = await search(api, index_name=loaded, vector=vector, top_k=60, ef_search=70)
    assert (found["metrics"]["ef_search"], found["metrics"]["ef_search_source"]) == (
        70,
        "request",
    )
    # A request beam below top_k is raised to top_k: pgvector returns at most ef_search rows.
    found = await search(api, index_name=loaded, vector=vector, top_k=60, ef_search=20)
    assert (found["metrics"]["ef_search"], found["metrics"]["results"]) == (60, 60)

    name = index_name()
    created = await create(api, name, ef_search=50)
    try:
        assert created["ef_search"] == 50
        upserted = await api.post(
            "/vectors/upsert",
            json={"index_name": name, "vectors": [
                {"id": str(i), "vector": data[i].tolist()} for i in range(100)]},
        )  # fmt: skip
        assert upserted.status_code == 200, upserted.text
        for top_k, beam in ((10, 50), (80, 80)):
            found = await search(api, index_name=name, vector=vector, top_k=top_k)
            metrics = found["metrics"]
            assert (metrics["ef_search"], metrics["ef_search_source"]) == (beam, "index")
        found = await search(api, index_name=name, vector=vector, top_k=10, ef_search=300)
        assert (found["metrics"]["ef_search"], found["metrics"]["ef_search_source"]) == (
            300,
            "request",
        )
    finally:
        await api.delete(f"/vectors/indexes/{name}")
    for bad in (0, 1001, "100", 2.5, True):
        response = await api.post(
            "/vectors/search",
            json={"index_name": loaded, "vector": vector, "top_k": 5, "ef_search": bad},
        )
        assert response.status_code == 400, (bad, response.text)
    response = await api.post("/vectors/indexes", json={"name": index_name(), "dimension": DIM,
                                                        "ef_search": 0})  # fmt: skip
    assert response.status_code == 400, response.text


async def test_vectors_search_ranks_and_scores(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    found = await search(api, index_name=loaded, vector=data[5].tolist(), top_k=5)
    results = found["results"]
    assert results[0]["id"] == "5"
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-5)  # cosine similarity
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)
    assert all("vector" not in r and "metadata" not in r for r in results)


async def test_vectors_search_includes_vectors_and_metadata_on_request(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    found = await search(
        api,
        index_name=loaded,
        vector=data[8].tolist(),
        top_k=1,
        include_vectors=True,
        include_metadata=True,
    )
    (best,) = found["results"]
    assert best["metadata"] == {"category": "shoes", "price": 8, "even": True}
    assert np.allclose(best["vector"], data[8], atol=1e-6)


@pytest.mark.parametrize(
    ("text", "keep"),
    [
        ("category = 'shoes'", lambda i: i % 4 == 0),
        ("category = 'hats' AND price < 1000", lambda i: i % 4 == 1 and i < 1000),
        ("price BETWEEN 100 AND 299 OR category IN ('bags')",
         lambda i: 100 <= i <= 299 or i % 4 == 2),
        ("NOT even AND price >= 1500", lambda i: i % 2 == 1 and i >= 1500),
        ("category LIKE 'co%' AND price <> 3", lambda i: i % 4 == 3 and i != 3),
        ("price NOT IN (0, 1, 2) AND category = 'shoes'", lambda i: i % 4 == 0 and i > 2),
    ],
)  # fmt: skip
async def test_vectors_filtered_search_keeps_recall(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray, text: str, keep: Any
) -> None:
    allowed = np.array([i for i in range(COUNT) if keep(i)])
    queries = clustered(5, DIM, seed=5)
    hits = 0
    for query in queries:
        truth = [int(allowed[i]) for i in brute_force(data[allowed], query, 10, "cosine")]
        found = await search(
            api, index_name=loaded, vector=query.tolist(), top_k=10, filter=text,
            include_metadata=True,
        )  # fmt: skip
        assert found["metrics"]["search_path"] in ("hnsw_iterative", "exact")
        ids = [int(r["id"]) for r in found["results"]]
        assert len(ids) == 10
        assert all(keep(i) for i in ids)
        hits += len(set(ids) & set(truth))
    assert hits / (10 * len(queries)) >= 0.9


async def test_vectors_selective_filter_still_returns_every_match(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    found = await search(
        api, index_name=loaded, vector=data[0].tolist(), top_k=10, filter="price < 7"
    )
    assert sorted(int(r["id"]) for r in found["results"]) == list(range(7))
    assert found["metrics"]["search_path"] == "exact"
    single = await search(
        api, index_name=loaded, vector=data[0].tolist(), top_k=10, filter="price = 1234"
    )
    assert [r["id"] for r in single["results"]] == ["1234"]
    none = await search(
        api, index_name=loaded, vector=data[0].tolist(), top_k=10, filter="price > 99999"
    )
    assert none["results"] == []


@pytest.mark.parametrize(
    "text",
    [
        "1=1; DROP TABLE helios.api_keys",
        "price < 10) OR (1=1",
        "price < (SELECT count(*) FROM helios.api_keys)",
        "EXISTS (SELECT 1 FROM pg_roles)",
        "pg_sleep(5) IS NULL",
        "lower(category) = 'shoes'",
        "category = 'a' UNION SELECT key_hash FROM helios.api_keys",
        "price::text = '1'",
        "price = $1",
        "price = price",
        "metadata = '{}'",
        "colour = 'red'",
        "price = 'cheap'",
        "category = NULL",
        "category = 'x' -- AND 1=1",
        "",
        "   ",
        "'shoes'",
        "price + 1 > 3",
    ],
)
async def test_vectors_bad_filters_rejected(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray, text: str
) -> None:
    response = await api.post(
        "/vectors/search",
        json={"index_name": loaded, "vector": data[0].tolist(), "top_k": 3, "filter": text},
    )
    if text == "category = 'x' -- AND 1=1":
        # A comment is just a comment: the filter is category = 'x', which matches nothing.
        assert response.status_code == 200 and response.json()["results"] == []
        return
    if not text:
        # No filter at all: an empty string is the absence of a filter.
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_vectors_filter_without_declared_fields_typed_like_json(
    api: httpx.AsyncClient,
) -> None:
    name = index_name()
    await create(api, name, metric="l2")
    await api.post(
        "/vectors/upsert",
        json={
            "index_name": name,
            "vectors": [
                {"id": "n", "vector": [1.0] * DIM, "metadata": {"size": 10, "tags": {"a": 1}}},
                {"id": "s", "vector": [2.0] * DIM, "metadata": {"size": "10"}},
                {"id": "none", "vector": [3.0] * DIM},
            ],
        },
    )
    probe = [0.0] * DIM

    async def ids(text: str) -> list[str]:
        found = await search(api, index_name=name, vector=probe, top_k=10, filter=text)
        return sorted(r["id"] for r in found["results"])

    assert await ids("size > 5") == ["n"]
    assert await ids("size = '10'") == ["s"]
    assert await ids("size IS NULL") == ["none"]
    assert await ids("tags.a = 1") == ["n"]
    assert await ids("tags.a IS NOT NULL") == ["n"]
    await api.delete(f"/vectors/indexes/{name}")


async def test_vectors_upsert_is_idempotent_by_id(api: httpx.AsyncClient) -> None:
    name = index_name()
    await create(api, name, metric="inner_product")
    first = [{"id": "a", "vector": [1.0] * DIM, "metadata": {"v": 1}}]
    second = [
        {"id": "a", "vector": [0.5] * DIM, "metadata": {"v": 2}},
        {"id": "b", "vector": [0.25] * DIM, "metadata": {"v": 3}},
        {"id": "b", "vector": [0.75] * DIM, "metadata": {"v": 4}},
    ]
    for batch in (first, second, second):
        response = await api.post("/vectors/upsert", json={"index_name": name, "vectors": batch})
        assert response.status_code == 200, response.text
    assert (await api.get(f"/vectors/indexes/{name}")).json()["count"] == 2
    found = await search(
        api, index_name=name, vector=[1.0] * DIM, top_k=5, include_metadata=True,
        include_vectors=True,
    )  # fmt: skip
    by_id = {r["id"]: r for r in found["results"]}
    assert by_id["a"]["metadata"] == {"v": 2}
    assert by_id["b"]["metadata"] == {"v": 4}
    assert [r["id"] for r in found["results"]] == ["b", "a"]  # larger inner product first
    assert found["results"][0]["score"] == pytest.approx(0.75 * DIM)
    deleted = await api.post("/vectors/delete", json={"index_name": name, "ids": ["a", "zz"]})
    assert deleted.json() == {"deleted_count": 1}
    await api.delete(f"/vectors/indexes/{name}")


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        ([{"id": "a", "vector": [1.0] * (DIM - 1)}], "dimensions"),
        ([{"id": "a", "vector": ["1"] * DIM}], "only numbers"),
        ([{"id": "a", "vector": [True] * DIM}], "only numbers"),
        ([{"id": "a", "vector": [0.0] * DIM}], "all zeros"),
        ([{"id": "", "vector": [1.0] * DIM}], "id"),
        ([{"id": None, "vector": [1.0] * DIM}], "id"),
        ([{"id": "a", "vector": [1.0] * DIM, "metadata": [1]}], "metadata"),
        ([{"id": "a", "vector": [1.0] * DIM, "extra": 1}], "unknown"),
        ([], "at least one"),
    ],
)
async def test_vectors_upsert_bad_input_rejected(
    api: httpx.AsyncClient, loaded: str, vectors: list[Any], message: str
) -> None:
    response = await api.post("/vectors/upsert", json={"index_name": loaded, "vectors": vectors})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


async def test_vectors_search_bad_input_rejected(api: httpx.AsyncClient, loaded: str) -> None:
    cases: list[tuple[dict[str, Any], int]] = [
        ({"index_name": "no_such_index", "vector": [1.0] * DIM}, 404),
        ({"index_name": loaded, "vector": [1.0] * 3}, 400),
        ({"index_name": loaded, "vector": [1.0] * DIM, "top_k": 0}, 400),
        ({"index_name": loaded, "vector": [1.0] * DIM, "top_k": 5000}, 400),
        ({"index_name": loaded, "vector": [1.0] * DIM, "include_vectors": "yes"}, 400),
        ({"index_name": loaded, "vector": [1.0] * DIM, "filter": 3}, 400),
        ({"index_name": loaded, "vector": "[1,2]"}, 400),
        ({"vector": [1.0] * DIM}, 400),
    ]
    for body, status in cases:
        response = await api.post("/vectors/search", json=body)
        assert response.status_code == status, (body, response.text)


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([True] + [1.0] * (DIM - 1), "only numbers"),
        ([None] + [1.0] * (DIM - 1), "only numbers"),
        (["1.0"] + [1.0] * (DIM - 1), "only numbers"),
        ([[1.0]] + [1.0] * (DIM - 1), "only numbers"),
        ([0] * DIM, "all zeros"),
    ],
)
async def test_vectors_search_vector_elements_checked(
    api: httpx.AsyncClient, loaded: str, vector: list[Any], message: str
) -> None:
    response = await api.post("/vectors/search", json={"index_name": loaded, "vector": vector})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


async def test_vectors_search_integers_and_huge_numbers(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    as_ints = [round(v * 1000) for v in data[3].tolist()]  # JSON integers are numbers too
    found = await search(api, index_name=loaded, vector=as_ints, top_k=1)
    assert found["results"][0]["id"] == "3"
    # Finite JSON numbers whose sum overflows a float are still finite.
    big = [1e308, 1e308] + [1.0] * (DIM - 2)
    response = await api.post("/vectors/search", json={"index_name": loaded, "vector": big})
    assert response.status_code in (200, 400), response.text  # the engine's float4 may refuse
    if response.status_code == 400:
        assert "NaN" not in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("include_vectors", "include_metadata", "filter_text"),
    [(True, False, None), (False, True, None), (True, False, "even"), (False, True, "even"),
     (True, True, "even"), (False, False, "even")],
)  # fmt: skip
async def test_vectors_search_returns_exactly_the_columns_asked_for(
    api: httpx.AsyncClient,
    loaded: str,
    data: np.ndarray,
    include_vectors: bool,
    include_metadata: bool,
    filter_text: str | None,
) -> None:
    body: dict[str, Any] = {"index_name": loaded, "vector": data[10].tolist(), "top_k": 3,
                            "include_vectors": include_vectors,
                            "include_metadata": include_metadata}  # fmt: skip
    if filter_text:
        body["filter"] = filter_text
    for _ in range(2):  # the second search runs the cached statement
        results = (await search(api, **body))["results"]
        assert results[0]["id"] == "10"
        for result in results:
            i = int(result["id"])
            assert set(result) == {"id", "score", "distance"} | (
                {"vector"} if include_vectors else set()
            ) | ({"metadata"} if include_metadata else set())
            if include_vectors:
                assert np.allclose(result["vector"], data[i], atol=1e-6)
            if include_metadata:
                assert result["metadata"] == {"category": CATEGORIES[i % 4], "price": i,
                                              "even": i % 2 == 0}  # fmt: skip
            if filter_text:
                assert i % 2 == 0


async def test_vectors_search_hot_route_and_asgi_answer_alike(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    """A body with Content-Length takes the listener's lane; a chunked one (no length)
    goes through ASGI: same results, same errors."""
    payload = orjson.dumps({"index_name": loaded, "vector": data[4].tolist(), "top_k": 5})

    async def chunked(raw: bytes) -> Any:
        for start in range(0, len(raw), 100):
            yield raw[start : start + 100]

    lane = await api.post("/vectors/search", content=payload)
    asgi = await api.post("/vectors/search", content=chunked(payload))
    assert lane.status_code == asgi.status_code == 200, (lane.text, asgi.text)
    assert lane.headers["content-type"] == asgi.headers["content-type"] == "application/json"
    assert [r["id"] for r in lane.json()["results"]] == [r["id"] for r in asgi.json()["results"]]
    for bad, code in ((b"{", "INVALID_ARGUMENT"), (b"[1]", "INVALID_ARGUMENT"),
                      (b'{"index_name": "x", "nope": 1}', "INVALID_ARGUMENT")):  # fmt: skip
        answers = [
            await api.post("/vectors/search", content=bad),
            await api.post("/vectors/search", content=chunked(bad)),
        ]
        assert [a.status_code for a in answers] == [400, 400]
        assert answers[0].json() == answers[1].json()
        assert answers[0].json()["error"]["code"] == code


async def test_vectors_search_credentials_and_body_limit(
    node: Any, api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    body = {"index_name": loaded, "vector": data[1].tolist()}
    async with httpx.AsyncClient(base_url=node.api) as anonymous:
        response = await anonymous.post("/vectors/search", json=body)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        wrong = await anonymous.post(
            "/vectors/search", json=body, headers={"Authorization": "Bearer hdb_sk_nope"}
        )
        assert wrong.status_code == 401
    huge = {"index_name": loaded, "vector": [1.0] * (3 * 1024 * 1024)}  # > 10 MiB of JSON
    response = await api.post("/vectors/search", json=huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert (await api.post("/vectors/search", json=body)).status_code == 200
    metrics = (await api.get("/metrics")).text
    assert 'route="/vectors/search",status="200"' in metrics


async def test_vectors_search_top_k_varies_on_cached_statements(
    api: httpx.AsyncClient, loaded: str, data: np.ndarray
) -> None:
    """k is part of each cached statement's text: alternating k never reuses another's."""
    for top_k in (3, 7, 3, 1, 7, 50):
        for filter_text in (None, "category = 'hats'"):
            body: dict[str, Any] = {"index_name": loaded, "vector": data[2].tolist(),
                                    "top_k": top_k}  # fmt: skip
            if filter_text:
                body["filter"] = filter_text
            for exact in (False, True):
                results = (await search(api, **body, exact=exact))["results"]
                assert len(results) == top_k, (top_k, filter_text, exact)
                if filter_text:
                    assert all(int(r["id"]) % 4 == 1 for r in results)
