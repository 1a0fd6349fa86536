"""``python -m launcher.run`` outside any launcher: a local, TLS-secured cluster for the script."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

SCRIPT = """\
import sys

import dask.config
from distributed import Client

address = dask.config.get("scheduler-address")
assert address.startswith("tls://127.0.0.1:"), address
with Client() as client:
    print("plain client sees", len(client.scheduler_info()["workers"]), "workers")
for insecure in (address.replace("tls://", "tcp://"), address):
    with dask.config.set({"distributed.comm.tls.client.cert": None,
                          "distributed.comm.tls.client.key": None,
                          "distributed.comm.tls.ca-file": None}):
        try:
            Client(insecure, timeout="2s").close()
        except Exception as error:
            print("refused without certificates:", type(error).__name__)
        else:
            sys.exit("a client without the job's certificates got in")
sys.exit(int(sys.argv[1]))
"""


def test_local_cluster_is_tls_only_and_passes_exit_status(tmp_path):
    (tmp_path / "s.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "launcher.run", "--no-dashboard", "s.py", "5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 5, done.stderr
    assert "plain client sees" in done.stdout
    assert done.stdout.count("refused without certificates") == 2, done.stdout
