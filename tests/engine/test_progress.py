"""Live progress of a query: real LocalCluster, progress forced on, output captured."""

from __future__ import annotations

import io
import re
import time
from collections import Counter

import polars as pl
import pytest

from engine.dask import DaskEngine
from engine.progress import PROGRESS_TOPIC, ProgressDisplay, progress_wanted
from engine.stats import StageRecord

pytestmark = pytest.mark.timeout(120)


def _query() -> pl.LazyFrame:
    frame = pl.LazyFrame({"k": [i % 7 for i in range(5000)], "v": list(range(5000))})
    return frame.filter(pl.col("v") > 10).group_by("k").agg(pl.col("v").sum())


def _record(stage: int, rank: int, **numbers: object) -> StageRecord:
    record: StageRecord = {
        "stage": stage,
        "rank": rank,
        "start": 0.0,
        "end": 1.0,
        "seconds": 0.5,
        "rows_scanned": 0,
        "bytes_scanned": 0,
        "rows_out": 10,
        "bytes_shuffled": 0,
        "parts": 1,
    }
    record.update(numbers)
    return record


def test_collect_prints_every_stage_and_a_summary(dask_client_of_size, capsys):
    with DaskEngine(
        dask_client=dask_client_of_size(2), engine_options={"progress": True}
    ) as engine:
        result = _query().collect(engine=engine)
    assert result.height == 7
    lines = capsys.readouterr().err.splitlines()
    stage_lines = [line for line in lines if re.match(r"\[polars-hpc\] stage \d+ done", line)]
    assert len(stage_lines) == 3, lines  # Aggregate, RowWise [Filter], FrameSource
    assert any("Aggregate" in line and "shuffled" in line for line in stage_lines)
    assert any("5,000 rows scanned" in line for line in stage_lines)
    assert re.search(
        r"query done: 3/3 stages on 2 ranks in [\d.]+ s, 5,000 rows scanned", lines[-1]
    )


def test_ranks_report_stages_while_the_query_runs(dask_client_of_size):
    client = dask_client_of_size(2)
    with DaskEngine(dask_client=client, engine_options={"progress": True}) as engine:
        _query().collect(engine=engine)
    deadline = time.monotonic() + 30
    while True:  # the events travel through the scheduler: poll, they may lag the result
        per_query = Counter(msg["query"] for _, msg in client.get_events(PROGRESS_TOPIC))
        if 6 in per_query.values() or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert 6 in per_query.values(), per_query  # 3 stages x 2 ranks for one query


def test_progress_is_off_when_stderr_is_no_terminal(dask_client_of_size, capsys):
    with DaskEngine(dask_client=dask_client_of_size(2)) as engine:
        assert engine.options.progress is None
        _query().collect(engine=engine)
    assert "[polars-hpc]" not in capsys.readouterr().err


def test_environment_turns_progress_on(dask_client_of_size, capsys, monkeypatch):
    monkeypatch.setenv("POLARS_HPC_PROGRESS", "1")
    with DaskEngine(dask_client=dask_client_of_size(2)) as engine:
        assert engine.options.progress is True
        _query().collect(engine=engine)
    assert "query done" in capsys.readouterr().err


def test_auto_follows_the_stream():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_wanted(None, Terminal()) is True
    assert progress_wanted(None, io.StringIO()) is False
    assert progress_wanted(False, Terminal()) is False


def test_a_stage_is_done_when_every_rank_reported_it():
    out = io.StringIO()
    display = ProgressDisplay({0: "Aggregate", 1: "ScanSource"}, 2, out, live=False)
    display.update(_record(1, 0, rows_scanned=100, bytes_scanned=800, rows_out=None))
    assert out.getvalue() == ""
    display.update(_record(1, 1, rows_scanned=50, bytes_scanned=400, rows_out=None))
    assert out.getvalue() == (
        "[polars-hpc] stage 1 done (1/2), ScanSource, 150 rows scanned (1.2 KiB), 0.50 s\n"
    )


def test_a_terminal_gets_a_live_status_line():
    out = io.StringIO()
    display = ProgressDisplay({0: "Sort"}, 2, out, live=True)
    display.update(_record(0, 0, bytes_shuffled=2048))
    assert out.getvalue().startswith("\r[polars-hpc] stages 0/1, 0 rows scanned, 2.0 KiB shuffled")
    display.update(_record(0, 1))
    assert "\r\x1b[K[polars-hpc] stage 0 done (1/1), Sort, 20 rows out" in out.getvalue()
