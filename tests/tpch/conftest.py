"""TPC-H fixtures: SF 0.01 data generated once (and cached across sessions), polars' answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from distributed import Client

from benchmarks.tpch.data import ensure_tpch_data, scan_tables
from benchmarks.tpch.queries import QUERIES
from engine.dask import DaskEngine
from engine.options import FallbackMode

SCALE_FACTOR = 0.01
"""Small enough for a 2-core CI machine, large enough that every query returns rows but Q17."""


@pytest.fixture(scope="session")
def tpch_scale_factor() -> float:
    return SCALE_FACTOR


@pytest.fixture(scope="session")
def tpch_query(tpch_tables: dict[str, pl.LazyFrame]) -> Callable[[int], pl.LazyFrame]:
    """Build query ``number`` (1..22) over the SF 0.01 tables."""
    return lambda number: QUERIES[number](tpch_tables, scale_factor=SCALE_FACTOR)


@pytest.fixture(scope="session")
def tpch_dir() -> Path:
    """SF 0.01 parquet from ``tpchgen-cli`` in the shared cache (``POLARS_HPC_TPCH_CACHE``)."""
    return ensure_tpch_data(SCALE_FACTOR)


@pytest.fixture(scope="session")
def tpch_tables(tpch_dir: Path) -> dict[str, pl.LazyFrame]:
    return scan_tables(tpch_dir)


@pytest.fixture(scope="session")
def polars_answer(tpch_query: Callable[[int], pl.LazyFrame]) -> Callable[[int], pl.DataFrame]:
    """Polars' own result of a query, computed once per query for the whole session."""
    answers: dict[int, pl.DataFrame] = {}

    def get(number: int) -> pl.DataFrame:
        if number not in answers:
            answers[number] = tpch_query(number).collect()
        return answers[number]

    return get


@pytest.fixture(scope="session")
def tpch_engine(
    dask_client_of_size: Callable[[int], Client],
) -> Iterator[Callable[[int, FallbackMode], DaskEngine]]:
    """A ``DaskEngine`` on the shared cluster of ``n`` workers, per fallback mode, reused."""
    engines: dict[tuple[int, FallbackMode], DaskEngine] = {}

    def get(n_workers: int, fallback_mode: FallbackMode) -> DaskEngine:
        key = (n_workers, fallback_mode)
        if key not in engines:
            engines[key] = DaskEngine(
                dask_client=dask_client_of_size(n_workers),
                engine_options={"fallback_mode": fallback_mode},
            )
        return engines[key]

    yield get
    for engine in engines.values():
        engine.shutdown()
