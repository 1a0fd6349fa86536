"""``python -m launcher.info`` against real clusters: an address, a scheduler file, a local one."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.info import COLUMNS, main

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, stdout=out), out.getvalue()


def test_json_has_one_record_per_worker_in_rank_order(dask_client_of_size):
    client = dask_client_of_size(2)
    status, text = _run(["--scheduler-address", client.scheduler.address, "--json"])
    assert status == 0
    records = json.loads(text)
    assert [r["rank"] for r in records] == [0, 1]
    assert set(client.scheduler_info()["workers"]) == {r["address"] for r in records}
    assert len({r["pid"] for r in records}) == 2
    for record in records:
        assert record["cpu_affinity"] == sorted(os.sched_getaffinity(0))
        assert record["memory_limit"] == 2 * 1024**3
        assert record["polars_threads"] == 1  # the fixture's POLARS_MAX_THREADS
        assert {"gpu_uuid", "gpu_name", "gpu_memory_bytes", "numa_node", "nics"} <= set(record)


def test_table_from_a_scheduler_file(dask_client_of_size, tmp_path):
    client = dask_client_of_size(2)
    client.write_scheduler_file(str(tmp_path / "scheduler.json"))
    status, text = _run(["--scheduler-file", str(tmp_path / "scheduler.json")])
    assert status == 0
    header, *rows = text.splitlines()
    assert header.split("  ")[0] == "rank"
    assert all(name in header for name, _ in COLUMNS)
    assert [row.split()[0] for row in rows] == ["0", "1"]
    assert all("2.0 GiB" in row for row in rows)


def test_local_cluster_like_daskengine_and_help():
    env = {**os.environ, "UCX_WARN_UNUSED_ENV_VARS": "n"}
    command = [sys.executable, "-m", "launcher.info"]
    done = subprocess.run(
        [*command, "--n-workers", "1"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert done.stdout.splitlines()[1].startswith("0 ")
    helped = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert helped.returncode == 0
    assert "--scheduler-file PATH" in helped.stdout
    assert "--json" in helped.stdout


def test_local_worker_count_needs_no_address(dask_client_of_size, capsys):
    address = dask_client_of_size(2).scheduler.address
    assert main(["--scheduler-address", address, "--n-workers", "2"]) == 2
    assert "--n-workers applies to a local cluster" in capsys.readouterr().err


def test_json_never_shows_two_different_polars_thread_counts():
    """A CPU worker's binding plans no CPU set; its 0 read as the pool size beside the real 2."""
    done = subprocess.run(
        [sys.executable, "-m", "launcher.info", "--n-workers", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={**os.environ, "UCX_WARN_UNUSED_ENV_VARS": "n"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [record] = json.loads(done.stdout)
    assert record["polars_threads"] >= 1
    assert "polars_threads" not in record["binding"], record["binding"]
    assert record["binding"]["planned_polars_threads"] in (None, record["polars_threads"])
