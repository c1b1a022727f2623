"""The shipped proto, the repository's proto and the generated modules agree."""

from __future__ import annotations

from pathlib import Path

from heliosdb.v1 import PROTO_FILE, heliosdb_pb2, heliosdb_pb2_grpc

ROOT = Path(__file__).resolve().parents[4]


def test_shipped_proto_is_the_repository_proto() -> None:
    assert PROTO_FILE.read_text() == (ROOT / "proto/heliosdb/v1/heliosdb.proto").read_text()


def test_generated_service_has_the_spec_methods() -> None:
    service = heliosdb_pb2.DESCRIPTOR.services_by_name["HeliosDB"]
    assert service.full_name == "heliosdb.v1.HeliosDB"
    assert [m.name for m in service.methods] == [
        "ExecuteQuery", "ExecuteQueryStream", "BeginTransaction", "CommitTransaction",
        "RollbackTransaction", "VectorSearch", "VectorUpsert", "HealthCheck",
    ]  # fmt: skip
    assert hasattr(heliosdb_pb2_grpc, "HeliosDBStub")


def test_spec_messages_have_the_spec_fields() -> None:
    def fields(name: str) -> list[tuple[str, int]]:
        message = heliosdb_pb2.DESCRIPTOR.message_types_by_name[name]
        return [(f.name, f.number) for f in message.fields]

    assert fields("QueryRequest") == [("sql", 1), ("params", 2), ("transaction_id", 3)]
    assert fields("QueryResponse") == [
        ("columns", 1), ("rows", 2), ("affected_rows", 3), ("metrics", 4),
    ]  # fmt: skip
    assert fields("VectorSearchRequest") == [
        ("index_name", 1), ("vector", 2), ("top_k", 3), ("filter", 4),
        ("include_vectors", 5), ("include_metadata", 6),
    ]  # fmt: skip
