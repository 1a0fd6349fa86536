"""One logger setup: worker lines carry rank and host; level from option, env, launcher flag."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.dask import DaskEngine
from engine.logs import LOGGER_ROOTS, configure_logging, resolve_log_level

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

WORKER_SCRIPT = """
import logging
from distributed import Client, LocalCluster
from engine.dask import DaskEngine

def log(name, level, message):
    logging.getLogger(name).log(level, message)

if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1", memory_limit="1GiB") as cluster, Client(cluster) as client:
        with DaskEngine(dask_client=client) as engine:
            client.run(log, "engine.probe", logging.DEBUG, "debug from a worker")
            client.run(log, "preload.probe", logging.INFO, "preload line")
            logging.getLogger("engine.client_probe").info("client line")
"""


@pytest.fixture(autouse=True)
def restore_logging():
    """Leave this process's loggers as pytest expects them (propagating, no handler of ours)."""
    yield
    for name in LOGGER_ROOTS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, "_polars_hpc_handler", False)]:
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


LAUNCHED_SCRIPT = """
import logging, os
print("level", os.environ["POLARS_HPC_LOG_LEVEL"], logging.getLogger("engine").level)
"""


def test_worker_lines_carry_rank_host_and_the_env_level(tmp_path):
    """A real cluster in a child process, whose stderr (workers' included) we read whole."""
    script = tmp_path / "log_job.py"
    script.write_text(WORKER_SCRIPT)
    env = {**os.environ, "POLARS_HPC_LOG_LEVEL": "debug", "UCX_WARN_UNUSED_ENV_VARS": "n"}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    host = socket.gethostname()
    lines = done.stderr.splitlines()
    for line in [
        f"[rank 0 {host}] DEBUG engine.probe: debug from a worker",
        f"[rank 1 {host}] DEBUG engine.probe: debug from a worker",
        f"[rank 0 {host}] INFO preload.probe: preload line",
        f"[rank 1 {host}] INFO preload.probe: preload line",
        f"[client {host}] INFO engine.client_probe: client line",
    ]:
        assert line in lines, done.stderr


def test_environment_sets_the_engine_level(dask_client_of_size, monkeypatch):
    monkeypatch.setenv("POLARS_HPC_LOG_LEVEL", "error")
    client = dask_client_of_size(2)
    with DaskEngine(dask_client=client) as engine:
        assert engine.options.log_level == "ERROR"
        levels = client.run(lambda: [logging.getLogger(n).level for n in LOGGER_ROOTS])
    assert all(level == [logging.ERROR] * 3 for level in levels.values())
    monkeypatch.delenv("POLARS_HPC_LOG_LEVEL")
    with DaskEngine(dask_client=client, engine_options={"log_level": "WARNING"}):
        pass  # the shared cluster's workers and this process back to the default level
    levels = client.run(lambda: [logging.getLogger(n).level for n in LOGGER_ROOTS])
    assert all(level == [logging.WARNING] * 3 for level in levels.values())


def _logger_levels() -> dict[str, int]:
    """Runs anywhere (``client.run`` too): the level of each of our logger roots."""
    return {name: logging.getLogger(name).level for name in LOGGER_ROOTS}


def test_without_a_level_workers_keep_theirs_or_warning(dask_client_of_size, monkeypatch):
    """A DaskEngine without ``log_level`` keeps a level a launcher set; unset ones get WARNING.

    Both halves on real workers: ``launcher`` was set to INFO there, the others were unset.
    """
    monkeypatch.delenv("POLARS_HPC_LOG_LEVEL", raising=False)
    client = dask_client_of_size(2)

    def set_levels(levels: dict[str, int]) -> None:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)

    before = client.run(_logger_levels)
    client.run(
        set_levels, {"engine": logging.NOTSET, "preload": logging.NOTSET, "launcher": logging.INFO}
    )
    try:
        with DaskEngine(dask_client=client) as engine:
            assert engine.options.log_level is None
            levels = client.run(_logger_levels)
    finally:
        for address, old in before.items():
            client.run(set_levels, old, workers=[address])
    expected = {"engine": logging.WARNING, "launcher": logging.INFO, "preload": logging.WARNING}
    assert levels == dict.fromkeys(before, expected), levels


def test_level_precedence_and_bad_names():
    assert resolve_log_level("info", {"POLARS_HPC_LOG_LEVEL": "DEBUG"}, "WARNING") == "INFO"
    assert resolve_log_level(None, {}, "WARNING") == "WARNING"
    with pytest.raises(ValueError, match=r"'nope' \(from POLARS_HPC_LOG_LEVEL\) is not one of"):
        resolve_log_level(None, {"POLARS_HPC_LOG_LEVEL": "nope"}, "INFO")


def test_configuring_twice_keeps_one_handler():
    configure_logging("INFO", rank=2, host="node7")
    configure_logging("WARNING", rank=2, host="node7")
    for name in LOGGER_ROOTS:
        handlers = logging.getLogger(name).handlers
        assert len([h for h in handlers if getattr(h, "_polars_hpc_handler", False)]) == 1
        assert logging.getLogger(name).level == logging.WARNING


def test_launcher_flag_sets_the_level_of_the_job(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(LAUNCHED_SCRIPT)
    command = [sys.executable, "-m", "launcher.run", "--insecure", "--no-dashboard"]
    done = subprocess.run(
        [*command, "--log-level", "debug", str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "level DEBUG 10" in done.stdout
    assert f"[rank 0 {socket.gethostname()}] INFO launcher" in done.stderr
    bad = subprocess.run(
        [*command, "--log-level", "loud", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 2
    assert "--log-level: invalid choice: 'LOUD'" in bad.stderr
