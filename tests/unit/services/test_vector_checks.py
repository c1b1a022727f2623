"""The query and upsert vector check (services/vectors.py _checked_vector): the fast path
for a list of floats and the general one must accept and refuse the same things."""

from __future__ import annotations

from typing import Any

import pytest

from heliosdb.errors import HeliosError
from heliosdb.services.vectors import VectorIndex, _checked_vector

COSINE = VectorIndex("v", 3, "cosine", 16, 128, None, None)
L2 = VectorIndex("v", 3, "l2", 16, 128, None, None)


class Float(float):
    """A float subclass (numpy's float64 is one): a number, taken by the general path."""


@pytest.mark.parametrize(
    ("vector", "expected"),
    [
        ([1.0, 2.0, 3.5], [1.0, 2.0, 3.5]),
        ([1, 2, 3], [1.0, 2.0, 3.0]),
        ([1, 2.5, 3], [1.0, 2.5, 3.0]),
        ((1.0, 2.0, 3.0), [1.0, 2.0, 3.0]),
        ([Float(1.0), 2.0, 3.0], [1.0, 2.0, 3.0]),
        ([1e308, 1e308, 1.0], [1e308, 1e308, 1.0]),  # the sum overflows, no term does
    ],
)
def test_numbers_accepted(vector: Any, expected: list[float]) -> None:
    values = _checked_vector(COSINE, vector, "vector")
    assert values == expected
    assert all(type(v) is float for v in values)


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([1.0, True, 2.0], "only numbers"),
        ([True, True, True], "only numbers"),
        ([1.0, None, 2.0], "only numbers"),
        ([1.0, "2", 3.0], "only numbers"),
        ([1.0, [2.0], 3.0], "only numbers"),
        ([float("nan"), 1.0, 2.0], "NaN or infinity"),
        ([1.0, float("-inf"), 2.0], "NaN or infinity"),
        ([1, 2, float("inf")], "NaN or infinity"),
        ([10**400, 1, 1], "too large"),
        ([0.0, 0.0, 0.0], "all zeros"),
        ([0, 0, 0], "all zeros"),
        ([1.0, 2.0], "2 dimensions"),
        ("abc", "array of numbers"),
        (b"abc", "array of numbers"),
        (None, "array of numbers"),
        ({"a": 1}, "array of numbers"),
    ],
)
def test_bad_vectors_refused(vector: Any, message: str) -> None:
    with pytest.raises(HeliosError) as caught:
        _checked_vector(COSINE, vector, "vector")
    assert message in caught.value.message


def test_zero_vector_has_an_l2_distance() -> None:
    assert _checked_vector(L2, [0.0, 0.0, 0.0], "vector") == [0.0, 0.0, 0.0]
