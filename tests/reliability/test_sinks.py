"""Sinks that cannot be written: the error says why, and nothing incomplete looks complete.

Ranks write into a staging directory inside the target; the client moves the parts to their
final names only when every rank succeeded. "Disk full" is a file size limit
(``RLIMIT_FSIZE``) set in the worker processes, so this runs without root or a small tmpfs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cloudpickle
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine
from engine.hardware_binding import HardwareBindingPolicy

pytestmark = pytest.mark.timeout(120)

LIMIT_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def engine(dask_client_of_size) -> Iterator[DaskEngine]:
    options = {"hardware_binding": HardwareBindingPolicy(enabled=False)}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=options) as engine:
        yield engine


def big_frame() -> pl.LazyFrame:
    """320 kB of poorly compressible numbers: every rank's part exceeds the limit."""
    return pl.LazyFrame({"x": pl.int_range(0, 40_000, eager=True).hash(7)})


def limit_file_size(limit: int) -> tuple[int, int]:
    """Runs in a worker: cap file sizes (``ulimit -f``); EFBIG instead of SIGXFSZ."""
    signal.signal(
        signal.SIGXFSZ, signal.SIG_IGN if limit != resource.RLIM_INFINITY else signal.SIG_DFL
    )
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, before[1]))
    return before


@contextlib.contextmanager
def file_size_limit(engine: DaskEngine, limit: int) -> Iterator[None]:
    engine.client.run(limit_file_size, limit)
    try:
        yield
    finally:
        engine.client.run(limit_file_size, resource.RLIM_INFINITY)


@contextlib.contextmanager
def pickled_by_value(module: ModuleType) -> Iterator[None]:
    """Ship ``module``'s functions inside the tasks: this test's cluster never imported it."""
    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(
    ("file_format", "error"),
    [("parquet", pl.exceptions.ComputeError), ("csv", OSError), ("ipc", OSError)],
)
def test_disk_full_says_so_and_leaves_no_part_that_looks_complete(
    engine, tmp_path, file_format, error
):
    target = tmp_path / "out"
    with file_size_limit(engine, LIMIT_BYTES), pytest.raises(error) as raised:
        getattr(big_frame(), f"sink_{file_format}")(target, engine=engine)
    assert "File too large" in str(raised.value), raised.value
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "rank " in notes, notes
    assert "part." in notes, notes
    assert names(target) == [], "a failed sink left files"
    print(f"{file_format}: {type(raised.value).__name__}: {raised.value}\n{notes}")

    getattr(big_frame(), f"sink_{file_format}")(target, engine=engine)  # no limit: it works
    assert all(name.startswith("part.") for name in names(target)), names(target)


def test_a_successful_sink_leaves_only_final_parts(engine, tmp_path):
    target = tmp_path / "out"
    big_frame().sink_parquet(target, engine=engine)
    assert names(target) == ["part.0.0.parquet", "part.1.0.parquet"]
    assert_frame_equal(pl.read_parquet(target), big_frame().collect())


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[Path]:
    """A directory this process cannot write: mode 0500, or a read-only tmpfs for root."""
    directory = tmp_path / "ro"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o500)
        yield directory
        directory.chmod(0o700)
        return
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"root cannot be denied by permissions, and mount failed: {mount.stderr}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@pytest.mark.parametrize("inside", [False, True])
def test_target_that_is_not_writable_is_refused_before_any_rank_runs(
    engine, read_only_dir, inside, fault_udfs, tmp_path
):
    """The query's first operation leaves a marker per rank that runs it: none may appear.

    The UDF travels by value (this cluster has no ``fault_udfs`` uploaded).
    """
    target = read_only_dir / "out" if inside else read_only_dir
    markers = tmp_path / "markers"
    markers.mkdir()
    marked = big_frame().with_columns(
        pl.col("x").map_batches(
            functools.partial(fault_udfs.mark_reached, marker_dir=str(markers)),
            is_elementwise=True,
            return_dtype=pl.UInt64,
        )
    )
    cloudpickle.register_pickle_by_value(fault_udfs)
    try:
        with pytest.raises(
            PermissionError if not inside or os.geteuid() != 0 else OSError
        ) as raised:
            marked.sink_parquet(target, engine=engine)
    finally:
        cloudpickle.unregister_pickle_by_value(fault_udfs)
    message = str(raised.value)
    assert str(target) in message, message
    assert any(word in message for word in ("not writable", "Permission denied", "Read-only")), (
        message
    )
    assert names(markers) == [], "ranks ran the query before the target was refused"
    with pickled_by_value(fault_udfs):  # the control: a writable target, one marker per rank
        marked.sink_parquet(tmp_path / "writable", engine=engine)
    assert len(names(markers)) == 2, names(markers)
