"""VectorUpsert and VectorSearch: the same vectors service as REST, through grpcio."""

from __future__ import annotations

import math
import uuid
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2

from heliosdb.services.vectors import default_ef_search
from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import bearer, trailers
from tests.nodeproc import NodeProcess

Stub = heliosdb_pb2_grpc.HeliosDBStub
INVALID = "INVALID_ARGUMENT"


def metadata(**fields: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(fields)
    return out


@pytest.fixture(scope="module")
def index(node: NodeProcess, rw_key: str) -> str:
    name = f"g_{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{node.api}/vectors/indexes",
        json={"name": name, "dimension": 3, "metric": "l2"},
        headers={"Authorization": f"Bearer {rw_key}"},
    )
    assert response.status_code == 201, response.text
    return name


async def test_vector_upsert_then_search(stub: Stub, rw_key: str, index: str) -> None:
    upserted = await stub.VectorUpsert(
        pb.VectorUpsertRequest(
            index_name=index,
            vectors=[
                pb.VectorRecord(id="a", vector=[0, 0, 0], metadata=metadata(kind="x", n=1)),
                pb.VectorRecord(id="b", vector=[1, 0, 0], metadata=metadata(kind="y", n=2)),
                pb.VectorRecord(id="c", vector=[5, 5, 5], metadata=metadata(kind="x", n=3)),
            ],
        ),
        metadata=bearer(rw_key),
    )
    assert upserted.upserted_count == 3
    found = await stub.VectorSearch(
        pb.VectorSearchRequest(index_name=index, vector=[0.9, 0, 0], top_k=2),
        metadata=bearer(rw_key),
    )
    assert [m.id for m in found.results] == ["b", "a"]
    assert found.results[0].score == pytest.approx(0.1, abs=1e-5)  # l2: the distance
    assert found.metrics.search_path == "hnsw"
    assert found.metrics.results == 2
    # The index sets no ef_search: the beam follows top_k, and the metrics say so.
    assert found.metrics.ef_search == default_ef_search(2)
    assert found.metrics.ef_search_source == "default"
    assert not found.results[0].vector
    assert not found.results[0].HasField("metadata")


async def test_vector_search_filter_and_includes(stub: Stub, rw_key: str, index: str) -> None:
    await stub.VectorUpsert(
        pb.VectorUpsertRequest(
            index_name=index,
            vectors=[
                pb.VectorRecord(id="f1", vector=[9, 9, 9], metadata=metadata(kind="z", n=10)),
                pb.VectorRecord(id="f2", vector=[8, 8, 8], metadata=metadata(kind="z", n=11)),
            ],
        ),
        metadata=bearer(rw_key),
    )
    found = await stub.VectorSearch(
        pb.VectorSearchRequest(
            index_name=index,
            vector=[0, 0, 0],
            top_k=5,
            filter="kind = 'z' AND n >= 10",
            include_vectors=True,
            include_metadata=True,
        ),
        metadata=bearer(rw_key),
    )
    assert [m.id for m in found.results] == ["f2", "f1"]
    assert list(found.results[0].vector) == [8, 8, 8]
    assert dict(found.results[0].metadata) == {"kind": "z", "n": 11}
    assert found.metrics.search_path in ("hnsw_iterative", "exact")


async def test_vector_search_bad_filter_invalid_argument(
    stub: Stub, rw_key: str, index: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VectorSearch(
            pb.VectorSearchRequest(index_name=index, vector=[0, 0, 0], filter="n < (SELECT 1)"),
            metadata=bearer(rw_key),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "subqueries" in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (pb.VectorSearchRequest(index_name="nope_nope", vector=[0, 0, 0]), "NOT_FOUND"),
        (pb.VectorSearchRequest(index_name="", vector=[0, 0, 0]), "NOT_FOUND"),
        (pb.VectorSearchRequest(index_name="INDEX", vector=[0, 0]), INVALID),
        (pb.VectorSearchRequest(index_name="INDEX", vector=[math.nan, 0, 0]), INVALID),
        (pb.VectorSearchRequest(index_name="INDEX", vector=[0, 0, 0], top_k=-1), INVALID),
    ],
)  # fmt: skip
async def test_vector_search_bad_requests(
    stub: Stub, rw_key: str, index: str, request_: pb.VectorSearchRequest, code: str
) -> None:
    if request_.index_name == "INDEX":
        request_.index_name = index
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VectorSearch(request_, metadata=bearer(rw_key))
    assert trailers(caught.value)["heliosdb-error-code"] == code


async def test_vector_upsert_bad_vectors_invalid_argument(
    stub: Stub, rw_key: str, index: str
) -> None:
    for record in (
        pb.VectorRecord(id="x", vector=[1, 2]),
        pb.VectorRecord(id="x", vector=[math.inf, 0, 0]),
        pb.VectorRecord(id="", vector=[1, 2, 3]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.VectorUpsert(
                pb.VectorUpsertRequest(index_name=index, vectors=[record]),
                metadata=bearer(rw_key),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_vector_upsert_read_only_key_permission_denied(
    stub: Stub, ro_key: str, index: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VectorUpsert(
            pb.VectorUpsertRequest(
                index_name=index, vectors=[pb.VectorRecord(id="x", vector=[1, 2, 3])]
            ),
            metadata=bearer(ro_key),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_vector_search_without_credentials_unauthenticated(stub: Stub, index: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VectorSearch(pb.VectorSearchRequest(index_name=index, vector=[0, 0, 0]))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_vector_search_index_ef_search_wins(
    stub: Stub, node: NodeProcess, rw_key: str
) -> None:
    name = f"g_{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {rw_key}"}
    response = httpx.post(
        f"{node.api}/vectors/indexes",
        json={"name": name, "dimension": 3, "metric": "l2", "ef_search": 70},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    try:
        await stub.VectorUpsert(
            pb.VectorUpsertRequest(
                index_name=name, vectors=[pb.VectorRecord(id="a", vector=[1, 2, 3])]
            ),
            metadata=bearer(rw_key),
        )
        found = await stub.VectorSearch(
            pb.VectorSearchRequest(index_name=name, vector=[1, 2, 3], top_k=10),
            metadata=bearer(rw_key),
        )
        assert [m.id for m in found.results] == ["a"]
        assert (found.metrics.ef_search, found.metrics.ef_search_source) == (70, "index")
    finally:
        httpx.delete(f"{node.api}/vectors/indexes/{name}", headers=headers)
