"""Plans for recorded machines, asserted exactly (sysfs trees + NVML recordings in fixtures/)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from preload.binding import BindingPlan
from preload.cpulist import format_cpulist, parse_cpulist
from preload.nvml import RecordedNvml
from preload.sysfs import allowed_cpus_of_this_process, read_nics, read_online_cpus
from preload.topology import main, plan_node

FIXTURES = Path(__file__).parent / "fixtures"
DGX_UUID = "GPU-6c1f0a3e-4b1d-4e2a-9c7d-00000000000{}"


def plan(
    root: Path, machine: str, environ: dict[str, str], cpus: str | None = None, nvml: str = "nvml"
) -> list[tuple[str, str | None, str, str | None, str]]:
    """(gpu id, NUMA, CPUs, NIC affinity, UCX_NET_DEVICES) per visible GPU."""
    allowed = parse_cpulist(cpus) if cpus else read_online_cpus(root)
    recording = RecordedNvml.from_file(FIXTURES / machine / f"{nvml}.json")
    plans = plan_node(root, recording, environ, allowed)
    return [row(p) for p in plans]


def row(p: BindingPlan) -> tuple[str, str | None, str, str | None, str]:
    assert p.problem is None, p.problem
    assert p.gpu is not None
    numa = None if p.numa_node is None else str(p.numa_node)
    return (p.gpu["id"], numa, format_cpulist(p.cpus), p.nic_affinity, p.ucx_net_devices)


def test_dgx_h100_whole_node(machine: Callable[[str], Path]) -> None:
    assert plan(machine("dgx_h100"), "dgx_h100", {}) == [
        ("0", "0", "0-13,112-125", "pcie", "mlx5_0:1,ibp24s0"),
        ("1", "0", "14-27,126-139", "pcie", "mlx5_3:1,ibp64s0"),
        ("2", "0", "28-41,140-153", "pcie", "mlx5_4:1,ibp79s0"),
        ("3", "0", "42-55,154-167", "pcie", "mlx5_5:1,ibp94s0"),
        ("4", "1", "56-69,168-181", "pcie", "mlx5_6:1,ibp154s0"),
        ("5", "1", "70-83,182-195", "pcie", "mlx5_9:1,ibp192s0"),
        ("6", "1", "84-97,196-209", "pcie", "mlx5_10:1,ibp206s0"),
        ("7", "1", "98-111,210-223", "pcie", "mlx5_11:1,ibp220s0"),
    ]


def test_dgx_h100_partial_slurm_cpuset(machine: Callable[[str], Path]) -> None:
    """16 cores of socket 0 and 8 of socket 1: each NUMA node's share is split four ways."""
    cpus = "0-15,112-127,56-63,168-175"
    assert plan(machine("dgx_h100"), "dgx_h100", {}, cpus) == [
        ("0", "0", "0-3,112-115", "pcie", "mlx5_0:1,ibp24s0"),
        ("1", "0", "4-7,116-119", "pcie", "mlx5_3:1,ibp64s0"),
        ("2", "0", "8-11,120-123", "pcie", "mlx5_4:1,ibp79s0"),
        ("3", "0", "12-15,124-127", "pcie", "mlx5_5:1,ibp94s0"),
        ("4", "1", "56-57,168-169", "pcie", "mlx5_6:1,ibp154s0"),
        ("5", "1", "58-59,170-171", "pcie", "mlx5_9:1,ibp192s0"),
        ("6", "1", "60-61,172-173", "pcie", "mlx5_10:1,ibp206s0"),
        ("7", "1", "62-63,174-175", "pcie", "mlx5_11:1,ibp220s0"),
    ]


def test_dgx_h100_cpuset_on_the_other_socket_is_a_problem(
    machine: Callable[[str], Path],
) -> None:
    root = machine("dgx_h100")
    recording = RecordedNvml.from_file(FIXTURES / "dgx_h100" / "nvml.json")
    gpu2, gpu5 = plan_node(
        root, recording, {"CUDA_VISIBLE_DEVICES": "2,5"}, parse_cpulist("0-27,112-139")
    )
    assert row(gpu2) == ("2", "0", "0-27,112-139", "pcie", "mlx5_4:1,ibp79s0")
    assert gpu5.cpus == frozenset()
    assert gpu5.problem is not None
    assert "none of this task's CPUs (0-27,112-139) is local to GPU 0000:c3:00.0" in gpu5.problem


def test_dgx_h100_uuid_list(machine: Callable[[str], Path]) -> None:
    """Two GPUs on different sockets: each gets its whole NUMA node."""
    visible = f"{DGX_UUID.format(3)},{DGX_UUID.format(6)}"
    assert plan(machine("dgx_h100"), "dgx_h100", {"CUDA_VISIBLE_DEVICES": visible}) == [
        (DGX_UUID.format(3), "0", "0-55,112-167", "pcie", "mlx5_5:1,ibp94s0"),
        (DGX_UUID.format(6), "1", "56-111,168-223", "pcie", "mlx5_10:1,ibp206s0"),
    ]


def test_dgx_h100_mig_instances_share_their_gpu(machine: Callable[[str], Path]) -> None:
    root = machine("dgx_h100")
    recording = RecordedNvml.from_file(FIXTURES / "dgx_h100" / "nvml_mig.json")
    migs = [gpu.uuid for gpu in recording.devices()[0].mig_devices]
    environ = {"CUDA_VISIBLE_DEVICES": ",".join(migs)}
    plans = plan_node(root, recording, environ, read_online_cpus(root))
    assert [row(p) for p in plans] == [
        (migs[0], "0", "0-27,112-139", "pcie", "mlx5_0:1,ibp24s0"),
        (migs[1], "0", "28-55,140-167", "pcie", "mlx5_0:1,ibp24s0"),
    ]
    assert dict(plans[0].gpu or {}) == {
        "id": migs[0],
        "index": 0,
        "uuid": migs[0],
        "name": "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
        "memory_bytes": 42949672960,
        "pci_bus_id": "0000:1b:00.0",
    }


def test_grace_hopper(machine: Callable[[str], Path]) -> None:
    assert plan(machine("grace_hopper"), "grace_hopper", {}) == [
        ("0", "0", "0-71", "numa", "hsn0"),
        ("1", "1", "72-143", "numa", "hsn1"),
        ("2", "2", "144-215", "numa", "hsn2"),
        ("3", "3", "216-287", "numa", "hsn3"),
    ]


def test_pcie_box_with_one_nic(machine: Callable[[str], Path]) -> None:
    assert plan(machine("pcie_4gpu"), "pcie_4gpu", {}) == [
        ("0", "0", "0-15,64-79", "numa", "mlx5_0:1,ibp66s0"),
        ("1", "0", "16-31,80-95", "host-bridge", "mlx5_0:1,ibp66s0"),
        ("2", "1", "32-47,96-111", "system", "mlx5_0:1,ibp66s0"),
        ("3", "1", "48-63,112-127", "system", "mlx5_0:1,ibp66s0"),
    ]


def test_recorded_four_gpu_h200_vm(machine: Callable[[str], Path]) -> None:
    """Recorded on the lent 4x H200 VM: no NUMA info, 64 CPUs, one virtio NIC for all GPUs."""
    assert plan(machine("h200x4_vm"), "h200x4_vm", {}) == [
        ("0", None, "0-15", "host-bridge", "eth0"),
        ("1", None, "16-31", "host-bridge", "eth0"),
        ("2", None, "32-47", "host-bridge", "eth0"),
        ("3", None, "48-63", "host-bridge", "eth0"),
    ]


def test_fewer_cores_than_workers_splits_hyperthreads(machine: Callable[[str], Path]) -> None:
    """One core (CPUs 0 and 64) for two GPUs: one hyperthread each, still disjoint."""
    rows = plan(machine("pcie_4gpu"), "pcie_4gpu", {"CUDA_VISIBLE_DEVICES": "0,1"}, "0,64")
    assert rows == [
        ("0", "0", "0", "numa", "mlx5_0:1,ibp66s0"),
        ("1", "0", "64", "host-bridge", "mlx5_0:1,ibp66s0"),
    ]


def test_nics_skip_inactive_ports_down_links_and_virtual_devices(
    machine: Callable[[str], Path],
) -> None:
    names = [(nic.name, nic.netdev, nic.link_layer) for nic in read_nics(machine("dgx_h100"))]
    assert ("mlx5_7:1", "enp41s0f0np0", "ethernet") in names
    assert ("mlx5_1:1", "enp170s0f0np0", "ethernet") in names
    assert [name for name, _, _ in names if name.startswith("mlx5_8")] == []
    assert {name for name, _, _ in names} == {
        *(f"mlx5_{i}:1" for i in (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11)),
    }
    assert [nic.name for nic in read_nics(machine("pcie_4gpu"))] == ["mlx5_0:1"]


def test_unknown_gpu_is_a_problem_not_a_guess(machine: Callable[[str], Path]) -> None:
    root = machine("pcie_4gpu")
    recording = RecordedNvml.from_file(FIXTURES / "pcie_4gpu" / "nvml.json")
    (missing,) = plan_node(root, recording, {"CUDA_VISIBLE_DEVICES": "7"}, frozenset({0}))
    assert missing.cpus == frozenset()
    assert missing.problem is not None
    assert missing.problem.startswith("CUDA_VISIBLE_DEVICES entry '7' names no GPU of this node")


def test_cli_table_and_json(
    machine: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = machine("grace_hopper")
    nvml = str(FIXTURES / "grace_hopper" / "nvml.json")
    argv = ["--sysfs-root", str(root), "--nvml-json", nvml, "--cpus", "0-9,72-81"]
    assert main(argv) == 1  # GPUs 2 and 3 have none of the allowed CPUs
    table = capsys.readouterr().out.splitlines()
    assert table[1:3] == [
        "gpu  pci           name                memory  numa  cpus   threads  nics  nic affinity",
        "0    0009:01:00.0  NVIDIA GH200 120GB  96 GiB  0     0-9    10       hsn0  numa",
    ]
    assert table[6] == (
        "GPU 2: none of this task's CPUs (0-9,72-81) is local to GPU 0029:01:00.0 (local CPUs "
        "144-215); give the task CPUs of the GPU's socket (e.g. srun --cpu-bind, "
        "--gpu-bind=closest) or disable CPU binding"
    )
    assert main([*argv, "--json"]) == 1
    records = json.loads(capsys.readouterr().out)
    assert [r["cpulist"] for r in records] == ["0-9", "72-81", "", ""]
    assert records[2]["problem"].startswith("none of this task's CPUs (0-9,72-81)")


def test_cli_records_nvml_for_replay(
    machine: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nvml = FIXTURES / "dgx_h100" / "nvml_mig.json"
    recorded = tmp_path / "nvml.json"
    argv = ["--sysfs-root", str(machine("dgx_h100")), "--nvml-json", str(nvml)]
    assert main([*argv, "--record-nvml", str(recorded)]) == 0
    assert RecordedNvml.from_file(recorded).devices() == RecordedNvml.from_file(nvml).devices()
    assert "mlx5_11:1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name", ["dgx_h100", "grace_hopper", "pcie_4gpu", "virtio_vm", "h200x4_vm"]
)
def test_recording_a_node_reproduces_its_tree(
    name: str, machine: Callable[[str], Path], tmp_path: Path
) -> None:
    """What --record-sysfs writes for a node is exactly the fixture that node was built from."""
    recorded = tmp_path / "recorded.tree"
    nvml = str(FIXTURES / name / "nvml.json")
    main(["--sysfs-root", str(machine(name)), "--nvml-json", nvml, "--record-sysfs", str(recorded)])

    def entries(path: Path) -> set[str]:
        return {line for line in path.read_text().splitlines() if not line.startswith("#")}

    assert entries(recorded) == entries(FIXTURES / name / "sysfs.tree")


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--sysfs-root" in capsys.readouterr().out


def test_allowed_cpus_come_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nCpus_allowed:\tff\nCpus_allowed_list:\t0-3,8\n")
    assert allowed_cpus_of_this_process(status) == frozenset({0, 1, 2, 3, 8})


def test_virtio_nic_of_a_recorded_vm(machine: Callable[[str], Path]) -> None:
    """A NIC whose device is ``.../0000:00:03.0/virtio2`` belongs to that PCI function."""
    root = machine("virtio_vm")
    nics = read_nics(root)
    assert [(n.name, n.pci.bdf, n.pci.path, n.pci.numa_node) for n in nics] == [
        ("eth0", "0000:00:03.0", ("pci0000:00", "0000:00:03.0"), None)
    ]
    assert plan_node(root, RecordedNvml({"gpus": []}), {}, frozenset({0, 1})) == []
