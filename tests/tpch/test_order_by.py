"""Each TPC-H query's ORDER BY columns, by which answers are compared, are its output's."""

from __future__ import annotations

import pytest

from benchmarks.tpch.queries import ORDER_BY, QUERIES

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("number", sorted(QUERIES))
def test_order_by_names_output_columns(number, tpch_tables):
    names = QUERIES[number](tpch_tables).collect_schema().names()
    assert set(ORDER_BY.get(number, ())) <= set(names)
