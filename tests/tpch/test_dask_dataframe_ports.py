"""The dask.dataframe ports of the 22 queries agree with the polars queries (2 workers).

They are the benchmark's third column: a port that computes something else would make its
timing meaningless, so each is checked against polars on the same data.
"""

from __future__ import annotations

import pytest

from benchmarks.tpch.compare import assert_same_result
from benchmarks.tpch.dask_queries import DASK_QUERIES, read_tables, to_polars

pytest.importorskip("pandas", reason="dask.dataframe needs pandas: the [bench] extra")
pytestmark = pytest.mark.timeout(180)

QUERY_NUMBERS = sorted(DASK_QUERIES)


@pytest.fixture(scope="module")
def dask_tables(tpch_dir):
    return read_tables(tpch_dir)


@pytest.mark.parametrize("number", QUERY_NUMBERS, ids=[f"q{n}" for n in QUERY_NUMBERS])
def test_dask_port_matches_polars(
    number, dask_tables, polars_answer, dask_client_of_size, tpch_scale_factor
):
    client = dask_client_of_size(2)
    with client.as_current():
        result = DASK_QUERIES[number](dask_tables, scale_factor=tpch_scale_factor)
    assert_same_result(to_polars(result), polars_answer(number))
