"""ExecuteQuery, HealthCheck, auth and the error table, through grpcio."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import grpc
import httpx
import orjson
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import query, trailers, values
from tests.nodeproc import NodeProcess

Stub = heliosdb_pb2_grpc.HeliosDBStub


async def test_execute_query_spec_example_returns_rows(
    stub: Stub, rw_key: str, table_name: str
) -> None:
    await query(
        stub, rw_key, f"CREATE TABLE {table_name} (id serial PRIMARY KEY, name text, age int)"
    )
    inserted = await query(
        stub,
        rw_key,
        f"INSERT INTO {table_name} (name, age) VALUES ($1, $2), ($3, $4)",
        [pb.Value(string_value="ann"), pb.Value(int_value=30),
         pb.Value(string_value="bob"), pb.Value(int_value=12)],
    )  # fmt: skip
    assert inserted.affected_rows == 2
    assert inserted.metrics.command == "INSERT 0 2"
    response = await query(
        stub, rw_key, f"SELECT * FROM {table_name} WHERE age > $1", [pb.Value(int_value=21)]
    )
    assert [(c.name, c.type) for c in response.columns] == [
        ("id", "int4"), ("name", "text"), ("age", "int4"),
    ]  # fmt: skip
    assert [values(r) for r in response.rows] == [[1, "ann", 30]]
    assert response.metrics.rows_returned == 1
    assert response.metrics.execution_time_ms >= 0


async def test_execute_query_value_kinds_round_trip(stub: Stub, rw_key: str) -> None:
    moment = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.UTC)
    stamp = pb.Value()
    stamp.timestamp_value.FromDatetime(moment)
    params = [
        pb.Value(null_value=pb.NULL_VALUE),
        pb.Value(bool_value=True),
        pb.Value(int_value=2**62),
        pb.Value(double_value=1.5),
        pb.Value(string_value="héllo"),
        pb.Value(bytes_value=b"\x00\xff"),
        stamp,
        pb.Value(json_value='{"a": [1, 2]}'),
        pb.Value(array_value=pb.ArrayValue(values=[pb.Value(int_value=1), pb.Value(int_value=2)])),
        pb.Value(vector_value=pb.VectorValue(values=[1.0, 2.5])),
    ]
    response = await query(
        stub,
        rw_key,
        "SELECT $1::int, $2::bool, $3::bigint, $4::float8, $5::text, $6::bytea, "
        "$7::timestamptz, $8::jsonb, $9::int[], $10::vector, 1.25::numeric, "
        "'NaN'::float8, DATE '2024-01-02', '7b6a1a8e-0c5e-4c1e-9a8e-2b4d1c7e9f00'::uuid",
        params,
    )
    kinds = [v.WhichOneof("kind") for v in response.rows[0].values]
    assert kinds == [
        "null_value", "bool_value", "int_value", "double_value", "string_value",
        "bytes_value", "timestamp_value", "json_value", "array_value", "vector_value",
        "string_value", "double_value", "string_value", "string_value",
    ]  # fmt: skip
    row = response.rows[0].values
    assert row[2].int_value == 2**62
    assert row[4].string_value == "héllo"
    assert row[5].bytes_value == b"\x00\xff"
    assert row[6].timestamp_value.ToDatetime(tzinfo=dt.UTC) == moment
    assert orjson.loads(row[7].json_value) == {"a": [1, 2]}
    assert [v.int_value for v in row[8].array_value.values] == [1, 2]
    assert list(row[9].vector_value.values) == [1.0, 2.5]
    assert row[10].string_value == "1.25"
    assert math.isnan(row[11].double_value)
    assert row[12].string_value == "2024-01-02"


async def test_execute_query_bad_json_param_invalid_argument(stub: Stub, rw_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, rw_key, "SELECT $1::jsonb", [pb.Value(json_value="{nope")])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_execute_query_wrong_param_count_invalid_argument(stub: Stub, rw_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, rw_key, "SELECT $1::int, $2::int", [pb.Value(int_value=1)])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameter" in (caught.value.details() or "")


async def test_execute_query_without_credentials_unauthenticated(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ExecuteQuery(pb.QueryRequest(sql="SELECT 1"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailers(caught.value)["heliosdb-error-code"] == ("UNAUTHENTICATED")


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", "Bearer hdb_sk_not-a-real-key")],
        [("authorization", "Basic dXNlcjpwYXNz")],
        [("authorization", "Bearer ")],
        [("x-api-key", "hdb_pk_nope")],
    ],
)
async def test_execute_query_bad_credentials_unauthenticated(
    stub: Stub, metadata: list[tuple[str, str]]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ExecuteQuery(pb.QueryRequest(sql="SELECT 1"), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_execute_query_x_api_key_metadata_accepted(stub: Stub, rw_key: str) -> None:
    response = await stub.ExecuteQuery(
        pb.QueryRequest(sql="SELECT 1 AS one"), metadata=[("x-api-key", rw_key)]
    )
    assert values(response.rows[0]) == [1]


async def test_revoked_key_refused_on_the_next_call(
    stub: Stub, node: NodeProcess, admin_key: str
) -> None:
    """A key that just worked on this channel (the same header block, remembered as
    verified for a second) is refused on the very next call once revoked."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    created = httpx.post(
        f"{node.api}/keys", json={"name": "grpc-revoke", "kind": "secret"}, headers=headers
    )
    created.raise_for_status()
    key = created.json()["key"]
    for _ in range(3):
        assert values((await query(stub, key, "SELECT 1")).rows[0]) == [1]
    httpx.delete(f"{node.api}/keys/{created.json()['id']}", headers=headers).raise_for_status()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, key, "SELECT 1")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_execute_query_read_only_key_cannot_write(
    stub: Stub, rw_key: str, ro_key: str, table_name: str
) -> None:
    """Keys alternating on one channel (header blocks and verified keys remembered by the
    front) each keep their own rights."""
    await query(stub, rw_key, f"CREATE TABLE {table_name} (id int)")
    for n in range(3):
        await query(stub, rw_key, f"INSERT INTO {table_name} VALUES ({n})")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query(stub, ro_key, f"INSERT INTO {table_name} VALUES ({n})")
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    readable = await query(stub, ro_key, f"SELECT count(*) FROM {table_name}")
    assert values(readable.rows[0]) == [3]


async def test_execute_query_engine_error_carries_code_and_details(stub: Stub, rw_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, rw_key, "SELECT * FROM no_such_table_anywhere")
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_table_anywhere" in (error.details() or "")
    trailing = trailers(error)
    assert trailing["heliosdb-error-code"] == "NOT_FOUND"
    assert orjson.loads(trailing["heliosdb-error-details"])["sqlstate"] == "42P01"
    rich = rpc_status.from_call(_SyncView(error))  # type: ignore[arg-type]  # duck-typed call
    assert rich is not None
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    assert (info.reason, info.domain, info.metadata["sqlstate"]) == (
        "NOT_FOUND", "heliosdb.io", "42P01",
    )  # fmt: skip


async def test_execute_query_syntax_error_invalid_argument(stub: Stub, rw_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, rw_key, "SELEC 1")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailing = trailers(caught.value)
    assert orjson.loads(trailing["heliosdb-error-details"])["sqlstate"] == "42601"


async def test_execute_query_empty_sql_invalid_argument(stub: Stub, rw_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, rw_key, "   ")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_execute_query_unique_violation_conflict(
    stub: Stub, rw_key: str, table_name: str
) -> None:
    await query(stub, rw_key, f"CREATE TABLE {table_name} (id int PRIMARY KEY)")
    await query(stub, rw_key, f"INSERT INTO {table_name} VALUES (1)")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, rw_key, f"INSERT INTO {table_name} VALUES (1)")
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert trailers(caught.value)["heliosdb-error-code"] == "CONFLICT"


async def test_health_check_needs_no_credentials(stub: Stub) -> None:
    health = await stub.HealthCheck(pb.Empty())
    assert health.status == pb.HealthResponse.SERVING
    assert health.engine_reachable
    assert health.engine_mode == "embedded"
    assert health.version


async def test_standard_health_service_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "heliosdb.v1.HeliosDB"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes_the_service(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="heliosdb.v1.HeliosDB"),
    ]
    responses = [r async for r in reflection.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"heliosdb.v1.HeliosDB", "grpc.health.v1.Health"} <= names
    proto = descriptor_pb2.FileDescriptorProto.FromString(
        responses[1].file_descriptor_response.file_descriptor_proto[0]
    )
    methods = {m.name for m in proto.service[0].method}
    assert methods == {
        "ExecuteQuery", "ExecuteQueryStream", "BeginTransaction", "CommitTransaction",
        "RollbackTransaction", "VectorSearch", "VectorUpsert", "HealthCheck",
    }  # fmt: skip


def test_error_table_maps_every_code() -> None:
    from heliosdb.errors import ErrorCode
    from heliosdb.interfaces.grpc.errors import STATUS

    assert set(STATUS) == set(ErrorCode)


class _SyncView:
    """rpc_status.from_call reads code(), details() and trailing_metadata() of a call."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.error = error

    def code(self) -> grpc.StatusCode:
        return self.error.code()

    def details(self) -> str | None:
        return self.error.details()

    def trailing_metadata(self) -> object:
        return self.error.trailing_metadata()


async def test_execute_query_repeated_select_answers_as_the_first_time(
    stub: Stub, rw_key: str
) -> None:
    # A plain SELECT seen once runs on the principal's pipelined engine connection after
    # that (services/query.py); through gRPC its answers must be the pool path's, value
    # for value, for every type the pipeline decodes, NULLs and non-finite values too.
    marker = uuid.uuid4().hex
    sql = (
        f"SELECT $1::int8 AS i8, $1::int4 AS i4, $1::int2 AS i2, $2::text AS t, "
        f"$2::varchar AS v, $3::float8 AS f8, $3::float4 AS f4, 'NaN'::float8 AS nan, "
        f"'-Infinity'::float8 AS ninf, $4::bool AS b, $5::timestamptz AS ts, "
        f"'infinity'::timestamptz AS tinf, NULL::int8 AS n8, NULL::text AS nt /* {marker} */"
    )
    stamp = pb.Value()
    stamp.timestamp_value.FromDatetime(dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC))
    params = [
        pb.Value(int_value=-1234),
        pb.Value(string_value="héllo ✓"),
        pb.Value(double_value=2.5),
        pb.Value(bool_value=False),
        stamp,
    ]
    answers = [await query(stub, rw_key, sql, params) for _ in range(4)]
    first = answers[0]
    assert values(first.rows[0])[:5] == [-1234, -1234, -1234, "héllo ✓", "héllo ✓"]
    for later in answers[1:]:
        assert list(later.columns) == list(first.columns)
        # compared as bytes: NaN is a value here, equal to itself
        assert [r.SerializeToString() for r in later.rows] == [
            r.SerializeToString() for r in first.rows
        ]
        assert later.metrics.command == first.metrics.command == "SELECT 1"
        assert later.metrics.rows_returned == 1 and later.affected_rows == 0
