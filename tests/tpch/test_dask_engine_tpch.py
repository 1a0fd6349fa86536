"""All 22 TPC-H queries on DaskEngine (1, 2 and 4 workers) give polars' own answer, no fallback.

Every TPC-H query ends in ``ORDER BY`` (or returns one row), so rows are compared in order.
"""

from __future__ import annotations

import pytest
from polars.testing import assert_frame_equal

from benchmarks.tpch.queries import QUERIES

pytestmark = pytest.mark.timeout(180)

QUERY_NUMBERS = sorted(QUERIES)


@pytest.mark.parametrize("n_workers", [1, 2, 4])
@pytest.mark.parametrize("number", QUERY_NUMBERS, ids=[f"q{n}" for n in QUERY_NUMBERS])
def test_query_matches_polars(number, n_workers, tpch_query, polars_answer, tpch_engine):
    engine = tpch_engine(n_workers, "silent")
    assert_frame_equal(tpch_query(number).collect(engine=engine), polars_answer(number))


@pytest.mark.parametrize("number", QUERY_NUMBERS, ids=[f"q{n}" for n in QUERY_NUMBERS])
def test_query_runs_without_fallback(number, tpch_query, polars_answer, tpch_engine):
    """``fallback_mode="raise"`` makes any part of the plan that is not distributed an error."""
    engine = tpch_engine(2, "raise")
    assert_frame_equal(tpch_query(number).collect(engine=engine), polars_answer(number))
