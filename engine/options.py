"""Options of the distributed streaming executor: one frozen, typed, documented object.

Every field can also come from the environment (``POLARS_HPC_<FIELD>``, e.g.
``POLARS_HPC_FALLBACK_MODE=raise``), so a batch script can tune a job without editing the query.
Precedence: a value passed to the constructor > the environment > the default. The environment is
read when the engine resolves its options (:meth:`StreamingOptions.resolved`), never at import.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from preload.policy import HardwareBindingPolicy

__all__ = [
    "ENV_PREFIX",
    "FallbackMode",
    "FragmentEngine",
    "LogLevel",
    "StreamingOptions",
    "Transport",
]

FallbackMode = Literal["warn", "raise", "silent"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Transport = Literal["auto", "ucxx", "tcp"]
FragmentEngine = Literal["auto", "cpu", "gpu"]

ENV_PREFIX: Final = "POLARS_HPC_"
_MIB: Final = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class StreamingOptions:
    """How :class:`engine.dask.DaskEngine` runs queries.

    Unknown names raise ``TypeError`` listing the valid ones; bad values raise ``ValueError``.

    >>> StreamingOptions(fallback_mode="silent").fallback_mode
    'silent'
    >>> StreamingOptions(fallback_mode="loud")
    Traceback (most recent call last):
    ...
    ValueError: StreamingOptions.fallback_mode='loud' is not one of 'warn', 'raise', 'silent'
    """

    num_streaming_threads: int | None = None
    """Threads each worker uses for its fragments; ``None``: as many as its bound CPUs."""
    fallback_mode: FallbackMode = "warn"
    """What an operation the planner cannot distribute does: warn, raise, or run silently."""
    memory_resource_config: Mapping[str, Any] | None = None
    """RMM memory resource of GPU workers, in cudf-polars' shape:
    ``{"qualname": "rmm.mr.CudaAsyncMemoryResource", "options": {...}}``; ``None``: cudf-polars'
    default. CPU workers have none to set."""
    hardware_binding: HardwareBindingPolicy = field(default_factory=HardwareBindingPolicy)
    """Which CPU/NUMA/NIC binding the engine applies to each worker."""
    target_partition_size: int | None = None
    """Bytes of input a rank processes at a time, so memory stays bounded; ``None``: an eighth
    of the worker's memory limit (1 GiB without one), and a rank's share of a scan that a
    partial aggregation reduces is read whole by polars' streaming engine."""
    max_rows_per_partition: int | None = None
    """Rows a rank processes at a time, whichever of the two limits comes first; ``None``: no
    row limit."""
    broadcast_limit: int = 32 * _MIB
    """A join side estimated below this many bytes is sent to every rank instead of shuffled."""
    client_fast_path_bytes: int = 16 * _MIB
    """A ``collect``/``execute`` whose every input is an in-memory frame, together at most this
    many bytes, runs with polars in the calling process: distributing it costs more (20-30 ms
    of task round trips) than it could save. ``0``: every query runs on the ranks."""
    transport: Transport = "auto"
    """Communicator transport: ``ucxx`` when importable (``auto``), or plain ``tcp``."""
    comm_timeout_s: float = 60.0
    """Seconds a collective waits for a peer before every rank raises instead of hanging."""
    fragment_engine: FragmentEngine = "auto"
    """Where queries run: ``gpu``, device-resident on every worker's GPU (cudf-polars' streaming
    engine); ``cpu``, our executor with polars fragments; ``auto``, ``gpu`` when every worker
    owns a GPU and cudf-polars imports, else ``cpu``."""
    ucxx_fast_same_host: bool = False
    """Let UCX use shared memory/CMA between ranks of one host: several times faster there, but
    UCX then cannot turn a peer's death into an error (a dead peer can abort the reader)."""
    progress: bool | None = None
    """Show stage progress of ``collect``/``sink_*`` on stderr; ``None``: only on a terminal or
    in a notebook."""
    log_level: LogLevel | None = None
    """Level of the ``engine``/``preload``/``launcher`` loggers, on the client and (prefixed
    with rank and host) on every worker; ``None``: workers log WARNING, the client is left as
    configured."""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            _VALIDATORS[spec.name](getattr(self, spec.name))

    def set_by_user(self) -> frozenset[str]:
        """Names of the fields passed to the constructor (or, once resolved, from the environment).

        The device backend hands only these to cudf-polars, which has its own defaults.

        >>> sorted(StreamingOptions(broadcast_limit=1).set_by_user())
        ['broadcast_limit']
        """
        return _explicit_fields(self)

    def resolved(self, environ: Mapping[str, str]) -> StreamingOptions:
        """These options, with every field not passed explicitly taken from ``environ``.

        >>> StreamingOptions().resolved({"POLARS_HPC_FALLBACK_MODE": "raise"}).fallback_mode
        'raise'
        >>> opts = StreamingOptions(fallback_mode="silent")
        >>> opts.resolved({"POLARS_HPC_FALLBACK_MODE": "raise"}).fallback_mode
        'silent'
        """
        explicit = _explicit_fields(self)
        from_env = {
            name: _parse_env(name, environ[ENV_PREFIX + name.upper()])
            for name in _FIELD_NAMES
            if name not in explicit and ENV_PREFIX + name.upper() in environ
        }
        values = {name: getattr(self, name) for name in explicit}
        return StreamingOptions(**values, **from_env)


_FIELD_NAMES: Final = tuple(f.name for f in dataclasses.fields(StreamingOptions))
_EXPLICIT_ATTR: Final = "_explicit_fields"


def _explicit_fields(options: StreamingOptions) -> frozenset[str]:
    return getattr(options, _EXPLICIT_ATTR, frozenset())


def _reject_unknown_then_init(generated_init: Callable[..., None]) -> Callable[..., None]:
    """Wrap the generated ``__init__``: name unknown fields, remember which were passed."""

    @functools.wraps(generated_init)
    def __init__(self: StreamingOptions, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(_FIELD_NAMES))
        if unknown:
            raise TypeError(
                f"StreamingOptions got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"valid options are: {', '.join(_FIELD_NAMES)}"
            )
        generated_init(self, **kwargs)
        object.__setattr__(self, _EXPLICIT_ATTR, frozenset(kwargs))

    return __init__


StreamingOptions.__init__ = _reject_unknown_then_init(StreamingOptions.__init__)  # type: ignore[method-assign]


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[object], None]:
    def check(value: object) -> None:
        if value not in choices:
            listed = ", ".join(map(repr, choices))
            raise ValueError(f"StreamingOptions.{name}={value!r} is not one of {listed}")

    return check


def _positive_int(name: str, *, optional: bool = False) -> Callable[[object], None]:
    def check(value: object) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            hint = "a positive integer or None" if optional else "a positive integer"
            raise ValueError(f"StreamingOptions.{name}={value!r} must be {hint}")

    return check


def _non_negative_int(name: str) -> Callable[[object], None]:
    def check(value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"StreamingOptions.{name}={value!r} must be an integer >= 0")

    return check


def _positive_number(name: str) -> Callable[[object], None]:
    def check(value: object) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value < math.inf
        ):
            raise ValueError(f"StreamingOptions.{name}={value!r} must be a finite positive number")

    return check


def _boolean(name: str) -> Callable[[object], None]:
    def check(value: object) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"StreamingOptions.{name}={value!r} must be True or False")

    return check


def _optional_boolean(name: str) -> Callable[[object], None]:
    check = _boolean(name)

    def check_optional(value: object) -> None:
        if value is not None:
            check(value)

    return check_optional


def _optional_choice(name: str, choices: tuple[str, ...]) -> Callable[[object], None]:
    check = _choice(name, choices)

    def check_optional(value: object) -> None:
        if value is not None:
            check(value)

    return check_optional


def _check_policy(value: object) -> None:
    if not isinstance(value, HardwareBindingPolicy):
        raise ValueError(
            f"StreamingOptions.hardware_binding={value!r} must be a "
            "engine.hardware_binding.HardwareBindingPolicy"
        )


def _check_memory_resource_config(value: object) -> None:
    """cudf-polars' ``MemoryResourceConfig`` shape, checked here so a typo fails at once.

    >>> _check_memory_resource_config({"pool": True})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: StreamingOptions.memory_resource_config={'pool': True} must be a mapping with a ...
    """
    if value is None:
        return
    shape_ok = (
        isinstance(value, Mapping)
        and set(value) <= {"qualname", "options"}
        and isinstance(value.get("qualname"), str)
        and "." in value["qualname"]
        and (value.get("options") is None or isinstance(value["options"], Mapping))
    )
    if not shape_ok:
        raise ValueError(
            f"StreamingOptions.memory_resource_config={value!r} must be a mapping with a "
            "'qualname' such as 'rmm.mr.CudaAsyncMemoryResource' (the class to create) and "
            "optionally 'options' (its arguments), or None"
        )


_VALIDATORS: Final[dict[str, Callable[[object], None]]] = {
    "num_streaming_threads": _positive_int("num_streaming_threads", optional=True),
    "fallback_mode": _choice("fallback_mode", get_args(FallbackMode)),
    "memory_resource_config": _check_memory_resource_config,
    "hardware_binding": _check_policy,
    "target_partition_size": _positive_int("target_partition_size", optional=True),
    "max_rows_per_partition": _positive_int("max_rows_per_partition", optional=True),
    "broadcast_limit": _positive_int("broadcast_limit"),
    "client_fast_path_bytes": _non_negative_int("client_fast_path_bytes"),
    "transport": _choice("transport", get_args(Transport)),
    "comm_timeout_s": _positive_number("comm_timeout_s"),
    "fragment_engine": _choice("fragment_engine", get_args(FragmentEngine)),
    "ucxx_fast_same_host": _boolean("ucxx_fast_same_host"),
    "progress": _optional_boolean("progress"),
    "log_level": _optional_choice("log_level", get_args(LogLevel)),
}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def _parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none", "auto") else int(text)


_ENV_PARSERS: Final[dict[str, Callable[[str], object]]] = {
    "num_streaming_threads": _parse_optional_int,
    "fallback_mode": str.strip,
    "memory_resource_config": json.loads,
    "hardware_binding": lambda text: HardwareBindingPolicy(enabled=_parse_bool(text)),
    "target_partition_size": _parse_optional_int,
    "max_rows_per_partition": _parse_optional_int,
    "broadcast_limit": int,
    "client_fast_path_bytes": int,
    "transport": str.strip,
    "comm_timeout_s": float,
    "fragment_engine": str.strip,
    "ucxx_fast_same_host": _parse_bool,
    "progress": lambda text: None if text.strip().lower() in ("", "auto") else _parse_bool(text),
    "log_level": lambda text: text.strip().upper() or None,
}


def _parse_env(name: str, text: str) -> object:
    """Parse and validate one variable, so a bad value names the variable, not only the field."""
    variable = ENV_PREFIX + name.upper()
    try:
        value = _ENV_PARSERS[name](text)
        _VALIDATORS[name](value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"environment variable {variable}={text!r}: {error}") from None
    return value
