"""The partition facts ``launcher.sbatch`` checks a request against: literal ``sinfo`` output."""

from __future__ import annotations

import pytest

from launcher.sinfo import (
    PartitionRequest,
    check_request,
    gpu_refusal,
    parse_gres_gpus,
    parse_memory_mb,
    parse_sinfo_nodes,
    partition_nodes,
)

pytestmark = pytest.mark.timeout(30)

SINFO = """\
cn01|8|16000|(null)|cpu*
cn02|8|16000|(null)|cpu*
gn01|64|512000|gpu:h100:8(S:0-1)|gpu
gn02|32|256000+|gpu:a100:4,gpu:t4:2|gpu
gn02|32|256000|gpu:a100:4,gpu:t4:2|debug
"""


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("(null)", 0),
        ("gpu:8", 8),
        ("gpu:h100:8(S:0-1)", 8),
        ("gpu:a100:4,gpu:t4:2", 6),
        ("shard:8,gpu:2", 2),
        ("mps:100", 0),
    ],
)
def test_gpus_are_counted_from_the_gres_field(gres, gpus):
    assert parse_gres_gpus(gres) == gpus


@pytest.mark.parametrize(
    ("text", "mb"), [("1500", 1500), ("1500M", 1500), ("16G", 16384), ("1t", 1048576), ("0", 0)]
)
def test_memory_sizes_read_like_slurm(text, mb):
    assert parse_memory_mb(text) == mb


def test_nodes_per_partition_and_the_default_one():
    nodes = parse_sinfo_nodes(SINFO)
    assert [n.name for n in partition_nodes(nodes, None)] == ["cn01", "cn02"]
    assert [(n.name, n.gpus, n.memory_mb) for n in partition_nodes(nodes, "gpu")] == [
        ("gn01", 8, 512000),
        ("gn02", 6, 256000),
    ]
    assert partition_nodes(nodes, "nosuch") == []


def request(nodes=1, cpus=8, gpus=0, memory_mb=None) -> PartitionRequest:
    return PartitionRequest(nodes, cpus, gpus, memory_mb, {"cpus": "2 x 4", "memory": "--mem"})


def test_a_request_that_fits_has_no_problem():
    gpu = partition_nodes(parse_sinfo_nodes(SINFO), "gpu")
    assert check_request(request(nodes=2, cpus=32, gpus=4, memory_mb=200_000), gpu, "gpu") == []
    assert gpu_refusal(request(gpus=4), gpu, "gpu") is None


def test_each_shortfall_is_named_with_its_fix():
    cpu = partition_nodes(parse_sinfo_nodes(SINFO), "cpu")
    problems = check_request(request(cpus=16, memory_mb=20_000), cpu, "cpu")
    assert problems == [
        "the job asks for 16 CPUs per node (2 x 4), but the largest node of partition cpu has "
        "8: it would stay PENDING; lower --cpus-per-task or --ntasks-per-node",
        "the job asks for 20000 MB of memory per node (--mem), but the largest node of "
        "partition cpu has 16000: it would stay PENDING; lower --mem",
    ]


def test_too_many_nodes_for_what_each_needs():
    gpu = partition_nodes(parse_sinfo_nodes(SINFO), "gpu")
    [problem] = check_request(request(nodes=2, cpus=48), gpu, "gpu")
    assert "asks for 2 nodes, but partition gpu has only 1 that fit" in problem


def test_gpus_on_a_partition_without_any_are_refused():
    cpu = partition_nodes(parse_sinfo_nodes(SINFO), "cpu")
    refusal = gpu_refusal(request(gpus=1), cpu, "cpu")
    assert refusal is not None
    assert refusal.startswith("partition cpu has no GPUs")
    assert "--gpus-per-node 0" in refusal


def test_an_unknown_partition_is_named():
    assert check_request(request(), [], "nosuch") == [
        "sinfo lists no nodes in partition nosuch: check the name (sinfo -s lists the "
        "partitions), or leave --partition out for the default one"
    ]
