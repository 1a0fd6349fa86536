"""A stale MPICH segment of an earlier job with the same ids no longer hangs ``MPI_Init``."""

from __future__ import annotations

import os
import time

import pytest

from launcher.mpi import mpich_segment_path, remove_stale_mpich_segment

pytestmark = pytest.mark.timeout(30)

STEP = {"SLURM_JOB_ID": "987654321", "SLURM_STEP_ID": "7", "SLURM_LOCALID": "0"}


@pytest.fixture
def segment():
    path = mpich_segment_path(STEP)
    if not path.parent.is_dir():
        pytest.skip(f"{path.parent} does not exist here (not Linux with POSIX shared memory)")
    path.write_bytes(b"\0" * 64)
    yield path
    path.unlink(missing_ok=True)


def test_the_first_task_removes_a_segment_older_than_its_step(segment):
    hour_ago = time.time() - 3600
    os.utime(segment, (hour_ago, hour_ago))
    assert remove_stale_mpich_segment(STEP, started_s=time.time()) == segment
    assert not segment.exists()


def test_a_segment_of_this_step_is_kept(segment):
    assert remove_stale_mpich_segment(STEP, started_s=time.time()) is None
    assert segment.exists()


def test_other_tasks_of_the_node_leave_it_to_the_first(segment):
    hour_ago = time.time() - 3600
    os.utime(segment, (hour_ago, hour_ago))
    later_task = {**STEP, "SLURM_LOCALID": "1"}
    assert remove_stale_mpich_segment(later_task, started_s=time.time()) is None
    assert segment.exists()


def test_outside_slurm_there_is_no_segment_name():
    assert mpich_segment_path({}) is None
    assert remove_stale_mpich_segment({}, started_s=time.time()) is None
