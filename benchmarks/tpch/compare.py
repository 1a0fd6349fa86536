"""Compare TPC-H results from different engines: same columns, same rows, same order.

Engines disagree on types, not values: duckdb returns ``BIGINT`` years, ``HUGEINT`` counts and
``DECIMAL(38, 4)`` sums, polars ``Int32``, ``UInt32`` and ``Decimal(38, 2)``, pandas ``float64``.
:func:`normalize` maps every numeric column to ``Float64`` (TPC-H's integers are far below 2**53)
so only values are compared, with a relative tolerance that absorbs the rounding of decimal
products and of float sums added in another order.
"""

from __future__ import annotations

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
    actual: pl.DataFrame, expected: pl.DataFrame, *, check_row_order: bool = True
) -> None:
    """Raise ``AssertionError`` naming the first difference between two engines' answers."""
    assert_frame_equal(
        normalize(actual),
        normalize(expected),
        check_row_order=check_row_order,
        check_exact=False,
        rel_tol=RELATIVE_TOLERANCE,
    )
