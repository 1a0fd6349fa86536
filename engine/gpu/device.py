"""The device-resident GPU backend: cudf-polars' streaming engine on this engine's workers.

On a cluster whose every worker owns a GPU, a query runs on the devices from the parquet read to
the result: cudf-polars' streaming executor lowers it collectively on every rank, reads parquet
in chunks on the GPU, and shuffles, allgathers and joins device buffers through rapidsmpf over
UCXX, spilling when device memory runs short. We do not rebuild that engine (issue 14): we drive
cudf-polars' own ``DaskEngine`` with this engine's Dask client, and own what is around it:

- the bootstrap runs once per engine, after our binding (theirs is switched off, so a worker is
  never bound twice) and after the default ``engine="gpu"`` singleton of this process is shut
  down (cudf-polars refuses to start a streaming engine beside it);
- the RMM memory resource comes from ``StreamingOptions.memory_resource_config`` (cudf-polars'
  own default when unset), and :attr:`DeviceBackend.memory_resource` names it;
- ranks that share a GPU are allowed, with a warning, so two ranks on one card exercise the
  device shuffles;
- a query cudf-polars cannot translate raises :class:`DeviceRefusal` naming the operations, and
  the engine applies ``fallback_mode`` and runs it on the CPU executor.

Why cudf-polars' ``DaskEngine`` and not its SPMD entry points behind our own dispatch: both end
in the same ``evaluate_on_rank`` per rank; theirs sends the plan with ``Client.run``, which skips
the scheduler's task queue, so there is nothing for ours to win, and the dispatch stays theirs to
keep in step with the rapidsmpf context it created.

Nothing here imports cudf-polars at module level: CPU-only workers import this module to say
they have no GPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import polars as pl

if TYPE_CHECKING:
    from distributed import Client
    from polars.lazyframe.opt_flags import QueryOptFlags

    from engine.options import StreamingOptions

__all__ = [
    "DEFAULT_MEMORY_RESOURCE",
    "DeviceBackend",
    "DeviceRefusal",
    "device_readiness",
    "device_settings",
    "refused_operations",
]

logger = logging.getLogger(__name__)

REFUSAL_PREFIX: Final = "Query execution with GPU not possible"
"""How cudf-polars' translator starts the ``NotImplementedError`` of an untranslatable query."""

DEFAULT_MEMORY_RESOURCE: Final = "cudf-polars default (rmm.mr.CudaAsyncMemoryResource)"
"""What :attr:`DeviceBackend.memory_resource` says when ``memory_resource_config`` is unset."""


class DeviceRefusal(Exception):
    """cudf-polars cannot run this query on the GPU; ``operations`` says what it refused."""

    def __init__(self, operations: Sequence[str]) -> None:
        self.operations = tuple(operations)
        super().__init__("; ".join(self.operations))


def refused_operations(error: BaseException) -> list[str] | None:
    r"""The operations an untranslatable-query error names, or ``None`` for any other error.

    The error is matched by its message, whatever type polars re-raises it as.

    >>> refused_operations(NotImplementedError(
    ...     "Query execution with GPU not possible: unsupported operations.\n"
    ...     "The errors were:\n- NotImplementedError: rolling_map\n"))
    ['NotImplementedError: rolling_map']
    >>> refused_operations(NotImplementedError("something else")) is None
    True
    """
    message = str(error.args[0]) if error.args else ""
    start = message.find(REFUSAL_PREFIX)
    if start < 0:
        return None
    lines = message[start:].splitlines()
    return [line[2:].strip() for line in lines if line.startswith("- ")] or [lines[0]]


def device_readiness(
    environ: Mapping[str, str] | None = None, *, needs_gpu: bool = True
) -> str | None:
    """``None`` when this process can run the device backend, else why not (for errors).

    A worker needs a GPU of its own (``CUDA_VISIBLE_DEVICES``, set by the preload) and
    cudf-polars; the client needs cudf-polars only (``needs_gpu=False``: it translates queries).
    """
    environ = os.environ if environ is None else environ
    if importlib.util.find_spec("cudf_polars") is None:
        return "cudf-polars is not installed (pip install 'polars-hpc[gpu-cu13]')"
    if needs_gpu and not environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return "no GPU assigned (CUDA_VISIBLE_DEVICES is unset: start workers with the preload)"
    return None


@dataclass(frozen=True)
class DeviceSettings:
    """What the device backend takes from ``StreamingOptions`` (explicit settings only)."""

    memory_resource: dict[str, Any] | None
    """cudf-polars' ``MemoryResourceConfig`` fields; ``None``: its default."""
    executor_options: dict[str, Any]
    shared_gpus: Mapping[str, Sequence[int]]
    """GPU UUID -> the ranks that share it, for GPUs with more than one rank."""


_EXECUTOR_OPTIONS: Final = ("target_partition_size", "max_rows_per_partition")
"""Our options that mean the same to cudf-polars' streaming executor, passed when the user set
them: cudf-polars' own defaults (partitions of 2.5% of device memory) suit a GPU far better than
ours (128 MiB), which are sized for CPU fragments."""


def device_settings(options: StreamingOptions, gpu_uuids: Sequence[str | None]) -> DeviceSettings:
    """What the device backend takes from ``options``, for ranks owning ``gpu_uuids``.

    ``fallback_mode`` always goes along: cudf-polars applies it to an operation it can run only
    as one partition, as we apply it to one we cannot distribute.

    >>> from engine.options import StreamingOptions
    >>> s = device_settings(StreamingOptions(max_rows_per_partition=5), ["GPU-a", "GPU-a", "GPU-b"])
    >>> s.executor_options, dict(s.shared_gpus), s.memory_resource
    ({'fallback_mode': 'warn', 'max_rows_per_partition': 5}, {'GPU-a': (0, 1)}, None)
    """
    ranks_of: dict[str, list[int]] = {}
    for rank, uuid in enumerate(gpu_uuids):
        if uuid is not None:
            ranks_of.setdefault(uuid, []).append(rank)
    set_by_user = options.set_by_user()
    executor_options: dict[str, Any] = {"fallback_mode": options.fallback_mode}
    executor_options.update(
        (name, getattr(options, name))
        for name in _EXECUTOR_OPTIONS
        if name in set_by_user and getattr(options, name) is not None
    )
    config = options.memory_resource_config
    return DeviceSettings(
        memory_resource=None if config is None else dict(config),
        executor_options=executor_options,
        shared_gpus={uuid: tuple(ranks) for uuid, ranks in ranks_of.items() if len(ranks) > 1},
    )


@contextlib.contextmanager
def _refusal_as_device_refusal() -> Iterator[None]:
    """Turn cudf-polars' untranslatable-query error into :class:`DeviceRefusal`; others pass."""
    try:
        yield
    except Exception as error:
        operations = refused_operations(error)
        if operations is None:
            raise
        raise DeviceRefusal(operations) from error


class DeviceBackend:
    """cudf-polars' ``DaskEngine`` on our client: bootstrap once, then one call per query."""

    def __init__(self, client: Client, settings: DeviceSettings) -> None:
        from cudf_polars.engine.dask import DaskEngine as CudfDaskEngine
        from cudf_polars.engine.default_singleton_engine import DefaultSingletonEngine
        from cudf_polars.engine.hardware_binding import HardwareBindingPolicy
        from cudf_polars.utils.config import MemoryResourceConfig

        # engine="gpu" earlier in this process left a singleton that refuses company.
        DefaultSingletonEngine.shutdown()
        engine_options: dict[str, Any] = {
            "hardware_binding": HardwareBindingPolicy(enabled=False),
            "raise_on_fail": True,
            "allow_gpu_sharing": bool(settings.shared_gpus),
        }
        if settings.memory_resource is not None:
            engine_options["memory_resource_config"] = MemoryResourceConfig(
                qualname=settings.memory_resource["qualname"],
                options=settings.memory_resource.get("options"),
            )
            self.memory_resource = settings.memory_resource["qualname"]
        else:
            self.memory_resource = DEFAULT_MEMORY_RESOURCE
        for uuid, ranks in settings.shared_gpus.items():
            warnings.warn(
                f"ranks {', '.join(map(str, ranks))} share GPU {uuid}: each rank sizes its "
                "memory pool and spill limit for the whole card; set memory_resource_config "
                "and RAPIDSMPF_SPILL_DEVICE_LIMIT accordingly",
                UserWarning,
                stacklevel=4,
            )
        self._engine = CudfDaskEngine(
            dask_client=client,
            executor_options=dict(settings.executor_options),
            engine_options=engine_options,
        )
        self.running: Future[pl.DataFrame] | None = None
        """The latest query started by :meth:`start` (it may outlive a Ctrl-C)."""
        self.lost: str | None = None
        """Why this backend cannot run queries any more (a rank's worker left mid-query)."""

    def start(self, lf: pl.LazyFrame, optimizations: QueryOptFlags) -> Future[pl.DataFrame]:
        """:meth:`collect` in a thread of its own, so that the caller can watch the ranks.

        cudf-polars runs a query with ``Client.run``, which waits for every worker's answer
        and cannot be interrupted or cancelled; the thread is a daemon, so that a query whose
        ranks never answer cannot keep the process from exiting.
        """
        future: Future[pl.DataFrame] = Future()

        def run() -> None:
            future.set_running_or_notify_cancel()
            try:
                future.set_result(self.collect(lf, optimizations))
            except BaseException as error:
                future.set_exception(error)

        threading.Thread(target=run, name="polars-hpc-device-query", daemon=True).start()
        self.running = future
        return future

    @property
    def busy(self) -> bool:
        """Whether the ranks still run a query (one the caller stopped waiting for)."""
        return self.running is not None and not self.running.done()

    def collect(self, lf: pl.LazyFrame, optimizations: QueryOptFlags) -> pl.DataFrame:
        """Run ``lf`` on every rank's GPU; the result is gathered on this process.

        Raises :class:`DeviceRefusal` when cudf-polars cannot translate the query: nothing ran.
        """
        with _refusal_as_device_refusal():
            return lf.collect(engine=self._engine, optimizations=optimizations)

    def explain(self, lf: pl.LazyFrame) -> str:
        """cudf-polars' lowered (physical) plan of ``lf``, or why it refuses the query."""
        from cudf_polars.streaming.explain import explain_query

        with _refusal_as_device_refusal():
            return explain_query(lf, self._engine, physical=True)

    def shutdown(self) -> None:
        """Tear down every rank's rapidsmpf context and communicator; idempotent.

        Not while a rank is lost or a query still runs: the teardown is a ``Client.run`` that
        would wait for ranks that never answer. Their processes end with the cluster.
        """
        if self.lost is not None or self.busy:
            logger.warning(
                "the device backend's ranks are %s: their rapidsmpf contexts end with their "
                "processes",
                "gone" if self.lost is not None else "still running an interrupted query",
            )
            return
        self._engine.shutdown()
