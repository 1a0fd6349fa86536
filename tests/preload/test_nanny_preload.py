"""The nanny preload in real ``dask worker`` processes and real LocalClusters (fake GPU lists).

No GPU is needed: the preload only decides ``CUDA_VISIBLE_DEVICES`` from the environment, and
each worker's environment is read back through ``client.run``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

import preload

LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "MPI_", "MV2_", "PALS_", "FLUX_", "JSM_")
DASK_WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without launcher or GPU variables, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(LAUNCHER_PREFIXES)
        and key not in ("CUDA_VISIBLE_DEVICES", "POLARS_HPC_GPU_IDS")
    }
    return {**env, **extra}


def worker_view() -> dict[str, str | None]:
    return {
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slot": os.environ.get("POLARS_HPC_LOCAL_INDEX"),
        "rank": os.environ.get("PMI_RANK"),
        "order": os.environ.get("CUDA_DEVICE_ORDER"),
    }


def named_view(dask_worker: Any) -> tuple[Any, dict[str, str | None]]:
    return dask_worker.name, worker_view()


@pytest.fixture(scope="module")
def scheduler() -> Iterator[tuple[str, Client]]:
    with (
        LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield cluster.scheduler_address, client


def start_dask_worker(
    address: str, nworkers: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                *DASK_WORKER,
                address,
                "--nworkers",
                str(nworkers),
                "--nthreads",
                "1",
                "--memory-limit",
                "300MiB",
                "--no-dashboard",
                "--preload-nanny",
                "preload",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.timeout(240)
def test_two_dask_worker_processes_on_one_node_take_disjoint_gpus(
    scheduler: tuple[str, Client], tmp_path: Path
) -> None:
    address, client = scheduler
    processes = [
        start_dask_worker(
            address,
            3,
            clean_environ(
                CUDA_VISIBLE_DEVICES="0,1,2,3,4,5",
                PMI_RANK=str(rank),
                PMI_SIZE="2",
                MPI_LOCALRANKID=str(rank),
                MPI_LOCALNRANKS="2",
            ),
            tmp_path / f"rank{rank}.log",
        )
        for rank in range(2)
    ]
    try:
        client.wait_for_workers(6, timeout=180)
        views = sorted(client.run(worker_view).values(), key=lambda v: str(v["slot"]))
    finally:
        stop(processes)
    assert views == [
        {"gpu": str(slot), "slot": str(slot), "rank": str(slot // 3), "order": "PCI_BUS_ID"}
        for slot in range(6)
    ]


@pytest.mark.timeout(120)
def test_srun_gpus_per_task_list_is_kept(scheduler: tuple[str, Client], tmp_path: Path) -> None:
    """Task 3 of 4 on a node, given two GPUs by ``srun --gpus-per-task=2`` (as UUIDs)."""
    address, client = scheduler
    env = clean_environ(
        CUDA_VISIBLE_DEVICES="GPU-aaa,GPU-bbb",
        SLURM_PROCID="7",
        SLURM_NTASKS="8",
        SLURM_LOCALID="3",
        SLURM_NODEID="1",
        SLURM_STEP_ID="0",
        SLURM_STEP_TASKS_PER_NODE="4(x2)",
        SLURM_GPUS_PER_TASK="2",
    )
    process = start_dask_worker(address, 2, env, tmp_path / "worker.log")
    try:
        client.wait_for_workers(2, timeout=100)
        views = sorted(client.run(worker_view).values(), key=lambda v: str(v["slot"]))
    finally:
        stop([process])
    assert views == [
        {"gpu": "GPU-aaa", "slot": "6", "rank": None, "order": "PCI_BUS_ID"},
        {"gpu": "GPU-bbb", "slot": "7", "rank": None, "order": "PCI_BUS_ID"},
    ]


@pytest.mark.timeout(120)
def test_more_workers_than_gpus_stops_the_workers(
    scheduler: tuple[str, Client], tmp_path: Path
) -> None:
    address, _client = scheduler
    log = tmp_path / "worker.log"
    process = start_dask_worker(address, 2, clean_environ(CUDA_VISIBLE_DEVICES="0"), log)
    try:
        returncode = process.wait(timeout=100)
    finally:
        stop([process])
    assert returncode != 0
    text = log.read_text()
    assert "polars-hpc preload: GpuAssignmentError: not enough GPUs" in text
    assert "POLARS_HPC_ALLOW_GPU_SHARING=1" in text


@pytest.mark.timeout(120)
def test_preload_as_worker_preload_says_use_preload_nanny(
    scheduler: tuple[str, Client], tmp_path: Path
) -> None:
    address, _client = scheduler
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *DASK_WORKER,
                address,
                "--nthreads",
                "1",
                "--memory-limit",
                "300MiB",
                "--no-dashboard",
                "--preload",
                "preload",
            ],
            env=clean_environ(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 100
    try:
        while "--preload-nanny" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop([process])
    assert "TypeError: the polars-hpc preload must run in a Nanny, got a Worker" in log.read_text()


def test_a_worker_object_is_refused() -> None:
    with pytest.raises(TypeError, match=r"not `--preload`"):
        preload.dask_setup(object())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module", ["preload", "engine.dask"])
def test_local_cluster_contract(module: str) -> None:
    """``DaskEngine``'s LocalCluster: worker ``name`` i gets the i-th of POLARS_HPC_GPU_IDS."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="300MiB",
            preload_nanny=[module],
            env={"POLARS_HPC_GPU_IDS": "GPU-aaa,MIG-bbb"},
        ) as cluster,
        Client(cluster) as client,
    ):
        by_name = dict(client.run(named_view).values())
    assert by_name == {
        0: {"gpu": "GPU-aaa", "slot": "0", "rank": None, "order": "PCI_BUS_ID"},
        1: {"gpu": "MIG-bbb", "slot": "1", "rank": None, "order": "PCI_BUS_ID"},
    }


@pytest.mark.timeout(120)
def test_cpu_node_leaves_cpu_workers() -> None:
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="300MiB",
            preload_nanny=["preload"],
            env={"CUDA_VISIBLE_DEVICES": ""},
        ) as cluster,
        Client(cluster) as client,
    ):
        (view,) = client.run(worker_view).values()
    assert view == {"gpu": "", "slot": "0", "rank": None, "order": None}


@pytest.mark.timeout(120)
def test_local_cluster_fails_with_the_preload_message() -> None:
    with pytest.raises(Exception) as error_info:  # noqa: PT011 - Dask wraps it; the chain matters
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="300MiB",
            preload_nanny=["preload"],
            env={"POLARS_HPC_GPU_IDS": "0"},
        )
    chain: list[BaseException] = []
    error: BaseException | None = error_info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(
        "worker 1 has no GPU in POLARS_HPC_GPU_IDS='0'; start at most 1 worker(s)" in str(e)
        for e in chain
    ), chain
