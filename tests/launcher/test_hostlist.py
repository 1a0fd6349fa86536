"""Slurm host lists, pinned by literal inputs (as Slurm itself expands them)."""

from __future__ import annotations

import pytest

from launcher.hostlist import expand_hostlist, first_host


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("gpu[01-04,07]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]),
        ("compute-b2[1-3,5-6,8]", [f"compute-b2{i}" for i in (1, 2, 3, 5, 6, 8)]),
        ("localhost", ["localhost"]),
        ("a1,b[2-3]", ["a1", "b2", "b3"]),
        ("cn[8-11]", ["cn8", "cn9", "cn10", "cn11"]),
        ("cn[098-101]", ["cn098", "cn099", "cn100", "cn101"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("x[1],y", ["x1", "y"]),
        ("10.99.0.1,10.99.0.2", ["10.99.0.1", "10.99.0.2"]),
    ],
)
def test_expand_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


def test_first_host_is_where_rank_zero_runs():
    assert first_host("gpu[07-09],login1") == "gpu07"


@pytest.mark.parametrize(
    ("hostlist", "message"),
    [
        ("gpu[01-04", "unbalanced '\\['"),
        ("gpu01]", "unbalanced '\\]'"),
        ("gpu[4-1]", "runs backwards"),
        ("gpu[a-b]", "cannot parse range 'a-b'"),
        ("", "names no host"),
    ],
)
def test_bad_hostlists_name_the_problem(hostlist, message):
    with pytest.raises(ValueError, match=message):
        expand_hostlist(hostlist)
