"""StreamingOptions: names, values, and explicit > environment > default."""

from __future__ import annotations

import pickle

import pytest

from engine.hardware_binding import HardwareBindingPolicy
from engine.options import StreamingOptions


def test_defaults():
    opts = StreamingOptions()
    assert opts.fallback_mode == "warn"
    assert opts.hardware_binding == HardwareBindingPolicy()
    assert opts.transport == "auto"
    assert opts.comm_timeout_s == 60.0


def test_unknown_field_is_a_type_error_listing_valid_fields():
    with pytest.raises(TypeError) as error:
        StreamingOptions(fallback="warn", threads=2)
    message = str(error.value)
    assert "'fallback', 'threads'" in message
    for valid in ("num_streaming_threads", "fallback_mode", "broadcast_limit", "transport"):
        assert valid in message


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("fallback_mode", "loud", "'warn', 'raise', 'silent'"),
        ("num_streaming_threads", 0, "positive integer or None"),
        ("target_partition_size", -1, "positive integer"),
        ("broadcast_limit", 1.5, "positive integer"),
        ("max_rows_per_partition", True, "positive integer"),
        ("transport", "mpi", "'auto', 'ucxx', 'tcp'"),
        ("comm_timeout_s", 0, "positive number"),
        ("fragment_engine", "tpu", "'auto', 'cpu', 'gpu'"),
        ("hardware_binding", False, "HardwareBindingPolicy"),
        ("memory_resource_config", "pool", "mapping with a 'qualname'"),
        ("memory_resource_config", {"pool": True}, "mapping with a 'qualname'"),
    ],
)
def test_bad_value_is_a_value_error_naming_the_field(field, value, match):
    with pytest.raises(ValueError, match=f"StreamingOptions.{field}=.*{match}"):
        StreamingOptions(**{field: value})


def test_environment_fills_what_was_not_passed():
    environ = {
        "POLARS_HPC_FALLBACK_MODE": "raise",
        "POLARS_HPC_BROADCAST_LIMIT": "1024",
        "POLARS_HPC_HARDWARE_BINDING": "off",
        "POLARS_HPC_MEMORY_RESOURCE_CONFIG": '{"qualname": "rmm.mr.CudaMemoryResource"}',
        "POLARS_HPC_COMM_TIMEOUT_S": "5.5",
    }
    opts = StreamingOptions(broadcast_limit=7).resolved(environ)
    assert opts.fallback_mode == "raise"
    assert opts.broadcast_limit == 7  # explicit beats the environment
    assert opts.hardware_binding == HardwareBindingPolicy(enabled=False)
    assert opts.memory_resource_config == {"qualname": "rmm.mr.CudaMemoryResource"}
    assert opts.comm_timeout_s == 5.5


def test_default_when_neither():
    assert StreamingOptions().resolved({}) == StreamingOptions()


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ValueError, match="POLARS_HPC_FALLBACK_MODE"):
        StreamingOptions().resolved({"POLARS_HPC_FALLBACK_MODE": "loud"})
    with pytest.raises(ValueError, match="POLARS_HPC_HARDWARE_BINDING='maybe'"):
        StreamingOptions().resolved({"POLARS_HPC_HARDWARE_BINDING": "maybe"})


def test_options_are_frozen_and_picklable():
    opts = StreamingOptions(fallback_mode="silent")
    with pytest.raises(AttributeError):
        opts.fallback_mode = "raise"
    assert pickle.loads(pickle.dumps(opts)) == opts


def test_policy_rejects_non_bool():
    with pytest.raises(TypeError, match="HardwareBindingPolicy.cpu must be a bool"):
        HardwareBindingPolicy(cpu="yes")
