"""Per-job TLS files: written private, removed when the job ends, stale ones swept later."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from launcher.contact import ClusterContact
from launcher.security import (
    OWNER_FILE,
    new_tls_key_pair,
    remove_job_dir,
    remove_stale_job_dirs,
    write_job_dir,
)

pytestmark = pytest.mark.timeout(60)


def _contact(job: str) -> ClusterContact:
    cert, key = new_tls_key_pair()
    return ClusterContact("tls://127.0.0.1:1", job, 2, time.time(), cert, key)


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_job_dir_is_private_and_removed_with_the_job(tmp_path):
    directory = write_job_dir(tmp_path, _contact("7.0"))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "key.pem").stat().st_mode) == 0o600
    assert json.loads((directory / OWNER_FILE).read_text())["pid"] == os.getpid()
    remove_job_dir(directory)
    assert not directory.exists()


def test_sweep_removes_dirs_of_dead_jobs_and_keeps_running_ones(tmp_path):
    running = write_job_dir(tmp_path, _contact("1.0"))
    killed = write_job_dir(tmp_path, _contact("2.0"))
    owner = json.loads((killed / OWNER_FILE).read_text())
    (killed / OWNER_FILE).write_text(json.dumps({**owner, "pid": _dead_pid()}))
    reused_pid = write_job_dir(tmp_path, _contact("3.0"))  # our pid, another start time
    (reused_pid / OWNER_FILE).write_text(json.dumps({**owner, "started": owner["started"] - 99}))
    elsewhere = write_job_dir(tmp_path, _contact("4.0"))  # a job on another node, shared home
    (elsewhere / OWNER_FILE).write_text(json.dumps({**owner, "host": "other-node"}))
    old_elsewhere = write_job_dir(tmp_path, _contact("5.0"))
    (old_elsewhere / OWNER_FILE).write_text(json.dumps({**owner, "host": "other-node"}))
    month_ago = time.time() - 31 * 86400
    os.utime(old_elsewhere, (month_ago, month_ago))

    removed = remove_stale_job_dirs(tmp_path)

    assert sorted(removed) == sorted([killed, reused_pid, old_elsewhere])
    assert sorted(tmp_path.iterdir()) == sorted([running, elsewhere])


def test_sweep_of_a_missing_root_is_a_no_op(tmp_path):
    assert remove_stale_job_dirs(tmp_path / "absent") == []
