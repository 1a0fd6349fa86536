"""Compare TPC-H results from different engines: same columns, same rows, same order.

Engines disagree on types, not values: duckdb returns ``BIGINT`` years, ``HUGEINT`` counts and
``DECIMAL(38, 4)`` sums, polars ``Int32``, ``UInt32`` and ``Decimal(38, 2)``, pandas ``float64``.
:func:`normalize` maps every numeric column to ``Float64`` (TPC-H's integers are far below 2**53)
so only values are compared, with a relative tolerance that absorbs the rounding of decimal
products and of float sums added in another order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl
from polars.testing import assert_frame_equal

__all__ = ["RELATIVE_TOLERANCE", "assert_same_result", "normalize"]

RELATIVE_TOLERANCE: Final = 1e-6
"""Relative difference accepted between two engines' numbers (decimal rounding, float order)."""


def normalize(frame: pl.DataFrame) -> pl.DataFrame:
    """Every numeric column as ``Float64``; other columns unchanged.

    >>> from decimal import Decimal
    >>> normalize(pl.DataFrame({"a": [Decimal("1.50")], "b": pl.Series([2], dtype=pl.UInt32)}))
    shape: (1, 2)
    ┌─────┬─────┐
    │ a   ┆ b   │
    │ --- ┆ --- │
    │ f64 ┆ f64 │
    ╞═════╪═════╡
    │ 1.5 ┆ 2.0 │
    └─────┴─────┘
    """
    return frame.with_columns(pl.selectors.numeric().cast(pl.Float64))


def assert_same_result(
    actual: pl.DataFrame,
    expected: pl.DataFrame,
    *,
    check_row_order: bool = True,
    order_by: Sequence[str] = (),
) -> None:
    """Raise ``AssertionError`` naming the first difference between two engines' answers.

    ``order_by``: the query's sort columns (its ORDER BY). Then the rows are compared as a
    set and only these columns in order: rows that tie on them may come in any order (TPC-H
    Q11 at SF10 has two pairs of parts of equal value, which cudf-polars and polars list in
    different orders).

    >>> a = pl.DataFrame({"k": [1, 2], "v": [5, 5]})
    >>> assert_same_result(a.reverse(), a, order_by=["v"])
    >>> assert_same_result(a.reverse(), a)
    Traceback (most recent call last):
    ...
    AssertionError: DataFrames are different (value mismatch for column "k")
    ...
    """
    if order_by:
        _assert_equal(actual, expected, check_row_order=False)
        _assert_equal(actual.select(order_by), expected.select(order_by), check_row_order=True)
    else:
        _assert_equal(actual, expected, check_row_order=check_row_order)


def _assert_equal(actual: pl.DataFrame, expected: pl.DataFrame, *, check_row_order: bool) -> None:
    assert_frame_equal(
        normalize(actual),
        normalize(expected),
        check_row_order=check_row_order,
        check_exact=False,
        rel_tol=RELATIVE_TOLERANCE,
    )
