"""Bad input: the error polars gives (same type, same message), raised in the client.

Each case runs the query with polars' own engine first and expects exactly that error from
``DaskEngine``: ``pytest.raises(type(polars_error), match=re.escape(str(polars_error)))``.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest

from engine.dask import DaskEngine
from engine.hardware_binding import HardwareBindingPolicy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def engine(dask_client_of_size) -> Iterator[DaskEngine]:
    options = {"hardware_binding": HardwareBindingPolicy(enabled=False)}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=options) as engine:
        yield engine


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Small files for every case: good ones, mismatching ones, a corrupt one."""
    root = tmp_path_factory.mktemp("inputs")
    good = pl.DataFrame({"a": [1, 2, 3, 4], "b": ["w", "x", "y", "z"]})
    good.write_parquet(root / "good.parquet")
    good.write_csv(root / "good.csv")
    (root / "dtype").mkdir()
    good.write_parquet(root / "dtype" / "1.parquet")
    pl.DataFrame({"a": [1.5, 2.5], "b": ["u", "v"]}).write_parquet(root / "dtype" / "2.parquet")
    (root / "extra").mkdir()
    good.write_parquet(root / "extra" / "1.parquet")
    good.with_columns(c=pl.lit(1)).write_parquet(root / "extra" / "2.parquet")
    (root / "missing").mkdir()
    good.with_columns(c=pl.lit(1)).write_parquet(root / "missing" / "1.parquet")
    good.write_parquet(root / "missing" / "2.parquet")
    (root / "mixed").mkdir()
    good.write_parquet(root / "mixed" / "1.parquet")
    pl.DataFrame({"a": [1.5, 2.5], "c": ["u", "v"]}).write_parquet(root / "mixed" / "2.parquet")
    (root / "corrupt.parquet").write_bytes(b"PAR1" + b"\0" * 64)
    (root / "corrupt").mkdir()
    good.write_parquet(root / "corrupt" / "1.parquet")
    (root / "corrupt" / "2.parquet").write_bytes(b"PAR1" + b"\0" * 64)
    return root


CASES: dict[str, Callable[[Path], pl.LazyFrame]] = {
    "path that does not exist (parquet)": lambda d: pl.scan_parquet(d / "nope.parquet"),
    "path that does not exist (csv)": lambda d: pl.scan_csv(d / "nope.csv"),
    "glob matching nothing": lambda d: pl.scan_parquet(d / "nothing-*.parquet"),
    "column dtypes differ between files": lambda d: pl.scan_parquet(d / "dtype" / "*.parquet"),
    "dtypes differ, one column read": lambda d: pl.scan_parquet(d / "dtype/*.parquet").select("a"),
    "a later file has an extra column": lambda d: pl.scan_parquet(d / "extra" / "*.parquet"),
    "a later file lacks a column": lambda d: pl.scan_parquet(d / "missing" / "*.parquet"),
    "extra column and other dtypes": lambda d: pl.scan_parquet(d / "mixed" / "*.parquet"),
    "mixed files, filtered": lambda d: (
        pl.scan_parquet(d / "mixed" / "*.parquet").filter(pl.col("b") == "x").select("b")
    ),
    "corrupt parquet file": lambda d: pl.scan_parquet(d / "corrupt.parquet"),
    "a corrupt file among good ones": lambda d: pl.scan_parquet(d / "corrupt" / "*.parquet"),
    "column that does not exist": lambda d: pl.scan_parquet(d / "good.parquet").select("nope"),
    "column that does not exist (filter)": lambda d: pl.scan_parquet(d / "good.parquet").filter(
        pl.col("nope") > 1
    ),
    "expression polars rejects": lambda d: pl.scan_parquet(d / "good.parquet").select(
        pl.col("b") + 1
    ),
    "aggregation polars rejects": lambda d: (
        pl.scan_parquet(d / "good.parquet").group_by("a").agg(pl.col("b").sum())
    ),
    "join on columns of different types": lambda d: pl.scan_parquet(d / "good.parquet").join(
        pl.scan_csv(d / "good.csv"), left_on="a", right_on="b"
    ),
}

FILE_AT_FAULT = {
    "path that does not exist (parquet)": "nope.parquet",
    "path that does not exist (csv)": "nope.csv",
    "glob matching nothing": "nothing-*.parquet",
    "column dtypes differ between files": "dtype/2.parquet",
    "dtypes differ, one column read": "dtype/2.parquet",
    "a later file has an extra column": "extra/2.parquet",
    "a later file lacks a column": "missing/2.parquet",
    "extra column and other dtypes": "mixed/2.parquet",
    "mixed files, filtered": "mixed/2.parquet",
    "corrupt parquet file": "corrupt.parquet",
    "a corrupt file among good ones": "corrupt/2.parquet",
}
"""Where the message (polars' own, or the engine's note below it) must name the file."""

PLANNED_ON_CLIENT = {
    "path that does not exist (parquet)",
    "path that does not exist (csv)",
    "glob matching nothing",
    "corrupt parquet file",
    "column that does not exist",
    "column that does not exist (filter)",
    "expression polars rejects",
    "aggregation polars rejects",
    "join on columns of different types",
}
"""Cases polars rejects before reading data: no task may reach a worker for them."""


def polars_error(lf: pl.LazyFrame) -> Exception:
    try:
        lf.collect()
    except Exception as error:  # the case is defined by what polars raises
        return error
    raise AssertionError("polars ran the query; the case does not test an error")


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_error_as_polars(engine, data, case):
    lf = CASES[case](data)
    expected = polars_error(lf)
    with pytest.raises(type(expected), match=re.escape(str(expected))) as got:
        lf.collect(engine=engine)
    frames = {frame.name for frame in traceback.extract_tb(got.value.__traceback__)}
    if case in PLANNED_ON_CLIENT:
        assert "run_rank" not in frames, f"{case}: raised on a worker, not before dispatch"
    shown = "\n".join([str(got.value), *getattr(got.value, "__notes__", [])])
    if case in FILE_AT_FAULT:
        assert str(data / FILE_AT_FAULT[case]) in shown, shown
    print(f"{case}: {type(expected).__name__}: {shown}")


def test_a_data_error_found_by_one_rank_keeps_polars_type_and_wording(engine, data):
    """A rank sees only its rows, so polars' counts in the message are that rank's."""
    lf = pl.scan_csv(data / "good.csv").select(pl.col("b").cast(pl.Int64))
    expected = polars_error(lf)
    wording = str(expected).split(" for ")[0]
    with pytest.raises(type(expected), match=re.escape(wording)):
        lf.collect(engine=engine)


def test_the_engine_runs_the_next_query_after_bad_input(engine, data):
    for case in CASES.values():
        with pytest.raises((pl.exceptions.PolarsError, FileNotFoundError)):
            case(data).collect(engine=engine)
    lf = pl.scan_parquet(data / "good.parquet").filter(pl.col("a") > 1)
    assert lf.collect(engine=engine).equals(lf.collect())


@pytest.mark.parametrize("sink", ["sink_parquet", "sink_csv"])
def test_sinks_raise_the_same_error(engine, data, tmp_path, sink):
    lf = pl.scan_parquet(data / "dtype" / "*.parquet")
    expected = polars_error(lf)
    with pytest.raises(type(expected), match=re.escape(str(expected))) as raised:
        getattr(lf, sink)(tmp_path / "out", engine=engine)
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "failed writing" not in notes, "a read error was reported as a write error"
    assert str(data / "dtype" / "2.parquet") in notes
    assert list((tmp_path / "out").iterdir()) == []
