"""A wrong environment: a GPU that is not there, too few GPUs, rrun, a scheduler that is gone.

GPUs are faked with the recorded machines of ``tests/preload/fixtures`` (sysfs tree + NVML
JSON), read by the real preload and binding code in real worker processes.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
from distributed import Client, LocalCluster

from engine.dask import SCHEDULER_ADDRESS_CONFIG, DaskEngine
from engine.hardware_binding import HardwareBindingPolicy, bind_workers
from launcher.contact import ClusterContact
from launcher.security import new_tls_key_pair
from preload.worker import BindingError

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).parents[1] / "preload" / "fixtures"
LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "MPI_", "MV2_", "PALS_", "FLUX_", "JSM_", "RRUN")


def recorded_sysfs(machine: str, root: Path) -> Path:
    """Materialize ``fixtures/<machine>/sysfs.tree`` (the preload tests' own reader)."""
    spec = importlib.util.spec_from_file_location(
        "preload_fixtures", FIXTURES.parent / "conftest.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_sysfs_tree(FIXTURES / machine / "sysfs.tree", root / machine)


def launcher_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    return {**env, **extra}


@pytest.fixture(scope="module")
def gpu_nine() -> Iterator[Client]:
    """One worker that the nanny preload gives GPU id ``9``, as CUDA_VISIBLE_DEVICES=9 would."""
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="500MiB",
            preload_nanny=["preload"],
            env={"POLARS_HPC_GPU_IDS": "9"},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_gpu_that_does_not_exist_is_named_never_replaced(gpu_nine, tmp_path):
    """DGX H100 recording (GPUs 0-7): GPU 9 fails with its id, nothing binds to another GPU."""
    sysfs = str(recorded_sysfs("dgx_h100", tmp_path))
    nvml = str(FIXTURES / "dgx_h100" / "nvml.json")
    strict = HardwareBindingPolicy(raise_on_fail=True)
    with pytest.raises(BindingError, match="CUDA_VISIBLE_DEVICES entry '9' names no GPU"):
        bind_workers(gpu_nine, strict, sysfs_root=sysfs, nvml_recording=nvml)
    (record,) = bind_workers(
        gpu_nine, HardwareBindingPolicy(), sysfs_root=sysfs, nvml_recording=nvml
    ).values()
    assert record["applied"] is False
    assert "CUDA_VISIBLE_DEVICES entry '9' names no GPU" in record["reason"]
    assert record["cpus"] == []


def test_dask_engine_on_a_worker_with_a_missing_gpu_fails_when_asked_to(gpu_nine):
    strict = {"hardware_binding": HardwareBindingPolicy(raise_on_fail=True)}
    with pytest.raises(BindingError, match="'9' names no GPU of this node"):
        DaskEngine(dask_client=gpu_nine, engine_options=strict)


def test_more_workers_than_gpus_names_the_fix(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(
        ValueError, match=r"n_workers=3 is more than the 2 visible GPU\(s\) \(0,1\)"
    ):
        DaskEngine(n_workers=3)


def test_more_workers_than_gpus_stops_the_nannies():
    with pytest.raises(Exception) as raised:  # noqa: PT011 - Dask wraps the preload's error
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="300MiB",
            preload_nanny=["preload"],
            env={"POLARS_HPC_GPU_IDS": "0"},
        )
    chain, error = [], raised.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("worker 1 has no GPU in POLARS_HPC_GPU_IDS='0'" in text for text in chain), chain


@pytest.mark.parametrize("variable", ["RRUN_RANK", "RAPIDSMPF_RANK"])
def test_rrun_variables_refused_by_engine_and_launcher(monkeypatch, variable):
    monkeypatch.setenv(variable, "0")
    with pytest.raises(RuntimeError, match=f"rrun cluster \\({variable}=0"):
        DaskEngine()
    run = subprocess.run(
        [sys.executable, "-m", "launcher.run", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env=launcher_env(**{variable: "0"}),
    )
    assert run.returncode == 2, run.stderr
    assert f"{variable}=0" in run.stderr, run.stderr


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_scheduler_fails_within_the_connect_timeout_naming_it():
    """Gives up after the 2 s connect timeout; 10 s allows for a loaded machine.

    The engine's lazy imports run before the clock starts (``engine.comm.bootstrap`` may load
    UCX, seconds on a busy 2-core machine): the bound times the connection attempt.
    """
    import engine.comm.bootstrap  # noqa: F401  (imported by DaskEngine() on first use)

    address = f"tcp://127.0.0.1:{closed_port()}"
    config = {SCHEDULER_ADDRESS_CONFIG: address, "distributed.comm.timeouts.connect": "2s"}
    start = time.monotonic()
    with (
        dask.config.set(config),
        pytest.raises(TimeoutError, match=f"no scheduler at {address} within 2s") as raised,
    ):
        DaskEngine()
    elapsed_s = time.monotonic() - start
    assert elapsed_s < 10, f"DaskEngine() gave up after {elapsed_s:.1f} s, not about 2 s"
    assert "DASK_POLARS_HPC__SCHEDULER_ADDRESS" in str(raised.value)


def run_rank_one(
    scheduler_file: Path, timeout_s: float
) -> tuple[subprocess.CompletedProcess, float]:
    """Rank 1 of a 2-rank mpiexec-style job of Slurm job 42, joining through ``scheduler_file``."""
    script = scheduler_file.with_name("script.py")
    script.write_text("print('the script ran')\n")
    env = launcher_env(
        PMI_RANK="1", PMI_SIZE="2", MPI_LOCALRANKID="1", SLURM_JOB_ID="42", SLURM_STEP_ID="0"
    )
    start = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "launcher.run",
            "--scheduler-file",
            str(scheduler_file),
            "--worker-timeout",
            str(timeout_s),
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return run, time.monotonic() - start


def test_stale_scheduler_file_is_not_used_and_named(tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    stale = ClusterContact("tls://127.0.0.1:1", "41.0", 2, time.time() - 86400)
    scheduler_file.write_text(stale.to_json())
    run, elapsed_s = run_rank_one(scheduler_file, 1)
    assert run.returncode != 0
    assert f"no scheduler file of this job at {scheduler_file} after 1 s" in run.stderr
    assert "job 41.0's scheduler tls://127.0.0.1:1, an earlier job" in run.stderr
    assert elapsed_s < 30, f"the rank gave up after {elapsed_s:.1f} s (--worker-timeout 1)"


def test_rank_with_an_unreachable_scheduler_names_the_address(tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    address = f"tls://127.0.0.1:{closed_port()}"
    cert, key = new_tls_key_pair()
    contact = ClusterContact(address, "42.0", 2, time.time(), cert, key)
    scheduler_file.write_text(contact.to_json())
    run, elapsed_s = run_rank_one(scheduler_file, 1)
    assert run.returncode != 0
    assert elapsed_s < 30, f"the rank gave up after {elapsed_s:.1f} s (--worker-timeout 1)"
    assert address in run.stderr


def test_local_cluster_refuses_a_gpu_index_the_driver_does_not_have():
    """DaskEngine() on an 8-GPU node with CUDA_VISIBLE_DEVICES=9: refused before any worker."""
    from engine.local_cluster import plan_local_cluster

    with pytest.raises(ValueError, match=r"names GPU 9, but the NVIDIA driver reports 8 GPU"):
        plan_local_cluster(
            {"CUDA_VISIBLE_DEVICES": "0,9"},
            n_workers=None,
            nvml_count=8,
            available_cpus=64,
            total_memory_bytes=64 << 30,
        )
