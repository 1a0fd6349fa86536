"""Bad options: the error names the option and the values it accepts.

``StreamingOptions`` and ``DaskEngine`` arguments are checked in this process; the launcher's
flags through real ``python -m launcher.run`` processes (started together: each costs an
interpreter start).
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest

from engine.dask import DaskEngine
from engine.options import StreamingOptions

pytestmark = pytest.mark.timeout(120)

FIELDS = [spec.name for spec in dataclasses.fields(StreamingOptions)]


@pytest.mark.parametrize("make", [StreamingOptions, lambda **kw: DaskEngine(engine_options=kw)])
def test_unknown_option_names_every_valid_one(make):
    with pytest.raises(TypeError) as error:
        make(fallback="warn", comm_timeout=5)
    message = str(error.value)
    assert "'comm_timeout', 'fallback'" in message
    for name in FIELDS:
        assert name in message


WRONG_VALUES = [
    # (option, bad value, what the message must list as accepted)
    ("fallback_mode", "loud", "'warn', 'raise', 'silent'"),
    ("fallback_mode", 1, "'warn', 'raise', 'silent'"),
    ("transport", "mpi", "'auto', 'ucxx', 'tcp'"),
    ("fragment_engine", "tpu", "'auto', 'cpu', 'gpu'"),
    ("comm_timeout_s", "5", "finite positive number"),
    ("comm_timeout_s", 0, "finite positive number"),
    ("comm_timeout_s", -1.0, "finite positive number"),
    ("comm_timeout_s", math.inf, "finite positive number"),
    ("comm_timeout_s", math.nan, "finite positive number"),
    ("target_partition_size", 0, "positive integer"),
    ("target_partition_size", 1.5e6, "positive integer"),
    ("max_rows_per_partition", -5, "positive integer"),
    ("broadcast_limit", True, "positive integer"),
    ("num_streaming_threads", 2.5, "positive integer or None"),
    ("ucxx_fast_same_host", "yes", "True or False"),
    ("hardware_binding", {"enabled": False}, "HardwareBindingPolicy"),
    ("memory_resource_config", [("pool", True)], "mapping with a 'qualname'"),
]


@pytest.mark.parametrize(("option", "value", "accepted"), WRONG_VALUES)
def test_bad_value_names_option_and_accepted_values(option, value, accepted):
    for make in (StreamingOptions, lambda **kw: DaskEngine(engine_options=kw)):
        with pytest.raises(ValueError, match=rf"StreamingOptions\.{option}=.*{accepted}"):
            make(**{option: value})


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ValueError, match=r"POLARS_HPC_COMM_TIMEOUT_S='soon'"):
        StreamingOptions().resolved({"POLARS_HPC_COMM_TIMEOUT_S": "soon"})
    with pytest.raises(ValueError, match=r"POLARS_HPC_TRANSPORT='mpi'.*'auto', 'ucxx', 'tcp'"):
        StreamingOptions().resolved({"POLARS_HPC_TRANSPORT": "mpi"})


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"engine_options": StreamingOptions()}, TypeError, "DaskEngine.from_options"),
        ({"engine_options": "fallback_mode=raise"}, TypeError, "must be a mapping"),
        ({"engine_options": [("fallback_mode", "raise")]}, TypeError, "must be a mapping"),
        ({"n_workers": 0}, ValueError, "n_workers=0 must be a positive integer"),
        ({"n_workers": "2"}, ValueError, "n_workers='2' must be a positive integer"),
        ({"n_workers": 2.5}, ValueError, "n_workers=2.5 must be a positive integer"),
        ({"dask_client": "tcp://127.0.0.1:8786"}, TypeError, r"dask_client=Client\(address\)"),
    ],
)
def test_bad_engine_arguments_are_named_before_anything_starts(arguments, error, match):
    with pytest.raises(error, match=match):
        DaskEngine(**arguments)


def test_from_options_needs_streaming_options():
    with pytest.raises(TypeError, match="needs a StreamingOptions, got dict"):
        DaskEngine.from_options({"fallback_mode": "raise"})


LAUNCHER_FLAGS = {
    "--bad-flag": ["unrecognized arguments: --bad-flag", "--protocol", "--worker-timeout"],
    "--protocol=foo": ["argument --protocol: invalid choice: 'foo'", "'tls', 'tcp', 'ucxx'"],
    "--worker-timeout=abc": ["argument --worker-timeout: invalid float value: 'abc'"],
    "--worker-timeout=-1": ["worker_timeout_s=-1.0 must be positive"],
    "--dashboard-port=99999": ["dashboard_port=99999 is not a TCP port"],
    "--protocol=tcp": ["protocol='tcp' sends data unencrypted", "--insecure"],
    "--memory-limit=lots": ["argument --memory-limit: invalid int value: 'lots'"],
    # The launcher's own check, not argparse's: the usage text names --memory-limit anyway.
    "--memory-limit=-5": ["--memory-limit: memory_limit_bytes=-5 must be a positive number"],
}


@pytest.fixture(scope="module")
def launcher_runs() -> dict[str, subprocess.CompletedProcess]:
    """Every bad command line of ``LAUNCHER_FLAGS``, run at once; results by flag."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    started = {
        flag: subprocess.Popen(
            [sys.executable, "-m", "launcher.run", flag, "--dry-run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for flag in LAUNCHER_FLAGS
    }
    return {
        flag: subprocess.CompletedProcess(p.args, p.wait(60), *p.communicate(timeout=60))
        for flag, p in started.items()
    }


@pytest.mark.parametrize("flag", sorted(LAUNCHER_FLAGS))
def test_launcher_flag_errors_name_the_flag_and_exit_2(launcher_runs, flag):
    run = launcher_runs[flag]
    assert run.returncode == 2, run.stderr
    assert "usage: python -m launcher.run" in run.stderr
    for part in LAUNCHER_FLAGS[flag]:
        assert part in run.stderr, run.stderr
