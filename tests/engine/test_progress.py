"""Live progress of a query: real LocalCluster, progress forced on, output captured."""

from __future__ import annotations

import concurrent.futures
import functools
import io
import re
import sys
import time
from collections import Counter
from pathlib import Path

import cloudpickle
import polars as pl
import pytest

from engine.dask import DaskEngine
from engine.progress import PROGRESS_TOPIC, ProgressDisplay, progress_wanted
from engine.stats import StageRecord

pytestmark = pytest.mark.timeout(120)

# Workers cannot import this test module: its UDF travels by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HOLD_LIMIT_S = 60.0
STAGE_DONE = re.compile(r"\[polars-hpc\] stage \d+ done")


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


def _hold_until(batch: pl.Series, release: str) -> pl.Series:
    """A UDF that holds its stage until the file ``release`` exists (fails after 60 s)."""
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} did not appear within {HOLD_LIMIT_S} s")
        time.sleep(0.02)
    return batch


def test_ranks_report_stages_while_the_query_runs(dask_client_of_size, capsys, tmp_path):
    """Stage events reach the scheduler and the client's display before the query can end.

    The last stage holds until the test sees an earlier stage reported: events that only
    travelled with (or after) the result would leave the query held, and the test red.
    """
    client = dask_client_of_size(2)
    seen_before = {msg["query"] for _, msg in client.get_events(PROGRESS_TOPIC)}
    release = tmp_path / "release"
    held = _query().with_columns(
        pl.col("v").map_batches(
            functools.partial(_hold_until, release=str(release)),
            is_elementwise=True,
            return_dtype=pl.Int64,
        )
    )
    with (
        DaskEngine(dask_client=client, engine_options={"progress": True}) as engine,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(held.collect, engine=engine)
        live_err, events = "", Counter[str]()
        deadline = time.monotonic() + 60
        while not (events and STAGE_DONE.search(live_err)):
            assert not running.done(), f"the query ended while held: {running.exception()}"
            assert time.monotonic() < deadline, (
                f"nothing reported within 60 s: events {events}, stderr {live_err!r}"
            )
            time.sleep(0.02)
            live_err += capsys.readouterr().err
            events = Counter(
                msg["query"]
                for _, msg in client.get_events(PROGRESS_TOPIC)
                if msg["query"] not in seen_before
            )
        assert not running.done()  # still held: the reports above came while it ran
        release.touch()
        result = running.result(timeout=60)
    assert result.sort("k").equals(_query().collect().sort("k"))
    expected = len(engine.last_query_stats.stages) * 2  # every stage, from both ranks
    deadline = time.monotonic() + 30
    while sum(events.values()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)  # the last stage's events travel through the scheduler, may lag
        events = Counter(
            msg["query"]
            for _, msg in client.get_events(PROGRESS_TOPIC)
            if msg["query"] not in seen_before
        )
    assert list(events.values()) == [expected], events  # all of them, and for one query


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
