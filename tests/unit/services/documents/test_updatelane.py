"""What the update lane makes of its statement's answer (services/documents/updatelane.py):
the counts, a hand-back (nothing was written) or, when the statement may have
committed, the error the command table would report."""

from __future__ import annotations

import struct
from typing import Any

import asyncpg

from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.services.documents import updatelane


class _Pipeline:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def forget(self, sql: str) -> None:
        self.forgotten.append(sql)


def _answer(
    result: tuple[list[bytes], bytes] | None,
    error: BaseException | None = None,
    upsert: bool = False,
) -> tuple[Any, list[str], int]:
    lane = updatelane.UpdateLane.__new__(updatelane.UpdateLane)
    lane.answered = 0
    pipeline = _Pipeline()
    got: list[Any] = []
    update = updatelane._Update(lane, pipeline, "sql", upsert, got.append)  # type: ignore[arg-type]
    update(result, error)
    assert len(got) == 1
    return got[0], pipeline.forgotten, lane.answered


def _engine_error(sqlstate: str, severity: str = "ERROR") -> BaseException:
    """What the pipeline makes of the engine's ErrorResponse."""
    fields = {"S": severity, "V": severity, "C": sqlstate, "M": "refused"}
    return asyncpg.PostgresError.new(fields)  # type: ignore[no-any-return]


def _row(matched: int, modified: int, unsupported: int) -> list[bytes]:
    return [struct.pack("!hiiiiii", 3, 4, matched, 4, modified, 4, unsupported)]


def test_counts_of_a_statement_that_ran() -> None:
    assert _answer((_row(1, 1, 0), b"SELECT 1")) == ((1, 1), [], 1)
    assert _answer((_row(1, 0, 0), b"SELECT 1")) == ((1, 0), [], 1)
    assert _answer((_row(0, 0, 0), b"SELECT 1")) == ((0, 0), [], 1)


def test_nothing_written_goes_back_to_the_command_table() -> None:
    assert _answer((_row(1, 0, 1), b"SELECT 1")) == (None, [], 0)  # the function left it
    assert _answer((_row(0, 0, 0), b"SELECT 1"), upsert=True) == (None, [], 0)
    assert _answer(([], b"SELECT 0")) == (None, [], 0)
    duplicate = _engine_error("23505")
    assert _answer(None, duplicate) == (None, [], 0)  # the statement stays prepared
    missing = _engine_error("42P01")
    assert _answer(None, missing) == (None, ["sql"], 0)  # prepared again next time


def test_an_outcome_that_may_have_committed_is_not_run_again() -> None:
    for error, code in (
        (TimeoutError(), ErrorCode.QUERY_TIMEOUT),
        (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), ErrorCode.UNAVAILABLE),
        (_engine_error("57P01", "FATAL"), ErrorCode.UNAVAILABLE),
    ):
        outcome, forgotten, answered = _answer(None, error)
        assert isinstance(outcome, HeliosError) and outcome.code is code
        assert (forgotten, answered) == ([], 0)
