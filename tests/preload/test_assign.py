"""The nanny's GPU decision, pinned by literal launcher views of a node."""

from __future__ import annotations

import pytest

from preload.assign import (
    GpuAssignment,
    GpuAssignmentError,
    assign_gpu,
    assign_local_cluster_gpu,
    sharing_allowed,
)

SIX = ["0", "1", "2", "3", "4", "5"]


def pick(visible: list[str], **kwargs: object) -> list[str | None]:
    """GPU of each worker index 0..workers_per_process-1."""
    per_process = int(kwargs["workers_per_process"])  # type: ignore[call-overload]
    return [assign_gpu(visible, index=i, **kwargs).gpu_id for i in range(per_process)]  # type: ignore[arg-type]


def test_two_processes_on_one_node_take_disjoint_gpus() -> None:
    common = {"list_was_set": True, "local_size": 2, "workers_per_process": 3, "nvml_count": 0}
    assert pick(SIX, local_rank=0, **common) == ["0", "1", "2"]
    assert pick(SIX, local_rank=1, **common) == ["3", "4", "5"]


def test_node_list_from_the_driver_when_nothing_is_set() -> None:
    visible = [str(i) for i in range(8)]
    for rank in range(8):
        got = assign_gpu(
            visible,
            list_was_set=False,
            local_rank=rank,
            local_size=8,
            workers_per_process=1,
            index=0,
            nvml_count=8,
        )
        assert got == GpuAssignment(str(rank), rank, "node list")


def test_list_narrowed_by_srun_gpus_per_task() -> None:
    """srun --gpus-per-task=1: rank 5 sees only its GPU (the driver shows all eight)."""
    got = assign_gpu(
        ["GPU-aaa"],
        list_was_set=True,
        local_rank=5,
        local_size=8,
        workers_per_process=1,
        index=0,
        nvml_count=8,
    )
    assert got == GpuAssignment("GPU-aaa", 5, "task list")


def test_narrowed_list_recognised_from_slurm_without_a_driver_count() -> None:
    common = {"list_was_set": True, "local_size": 2, "workers_per_process": 2, "nvml_count": 0}
    assert pick(["6", "7"], local_rank=1, per_task_hint=True, **common) == ["6", "7"]


def test_mig_ids_are_assigned_like_any_id() -> None:
    migs = ["MIG-a", "MIG-b", "MIG-c"]
    common = {"list_was_set": True, "local_size": 1, "workers_per_process": 3, "nvml_count": 1}
    assert pick(migs, local_rank=0, **common) == migs


def test_more_workers_than_gpus_fails_with_the_fix() -> None:
    with pytest.raises(GpuAssignmentError) as error:
        assign_gpu(
            ["0", "1", "2", "3"],
            list_was_set=True,
            local_rank=1,
            local_size=2,
            workers_per_process=3,
            index=1,
            nvml_count=4,
        )
    assert str(error.value) == (
        "not enough GPUs: the task at local rank 1 (of 2 on this node) runs 3 worker(s); "
        "worker 1 needs GPU slot 4, but this task sees 4 GPU(s) (0,1,2,3). Start fewer workers "
        "(--nworkers) or tasks per node, give each task its own GPUs (srun --gpus-per-task), or "
        "set POLARS_HPC_ALLOW_GPU_SHARING=1 to let workers share GPUs"
    )


def test_sharing_when_explicitly_allowed() -> None:
    common = {"list_was_set": True, "local_size": 2, "workers_per_process": 3, "nvml_count": 2}
    assert pick(["0", "1"], local_rank=1, allow_sharing=True, **common) == ["1", "0", "1"]
    assert sharing_allowed({"POLARS_HPC_ALLOW_GPU_SHARING": "1"})
    assert not sharing_allowed({"POLARS_HPC_ALLOW_GPU_SHARING": "0"})


def test_no_gpu_is_a_cpu_worker() -> None:
    got = assign_gpu(
        [],
        list_was_set=False,
        local_rank=2,
        local_size=4,
        workers_per_process=2,
        index=1,
        nvml_count=0,
    )
    assert got == GpuAssignment(None, 5, "no gpu")
    assert got.worker_env({}) == {"POLARS_HPC_LOCAL_INDEX": "5"}


def test_worker_env_pins_pci_order_unless_set() -> None:
    got = GpuAssignment("3", 3, "node list")
    assert got.worker_env({}) == {
        "POLARS_HPC_LOCAL_INDEX": "3",
        "CUDA_VISIBLE_DEVICES": "3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    assert got.worker_env({"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})["CUDA_DEVICE_ORDER"] == (
        "FASTEST_FIRST"
    )


def test_local_cluster_names_index_the_gpu_list() -> None:
    assert assign_local_cluster_gpu("GPU-x,GPU-y", 1) == GpuAssignment("GPU-y", 1, "local cluster")
    with pytest.raises(GpuAssignmentError, match="worker 2 has no GPU"):
        assign_local_cluster_gpu("0,1", 2)
    with pytest.raises(GpuAssignmentError, match="needs integer worker names"):
        assign_local_cluster_gpu("0,1", "tcp://10.0.0.1:4000")
