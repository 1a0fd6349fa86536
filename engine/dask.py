"""``DaskEngine``: run polars LazyFrames on a Dask cluster, one rank per worker.

The engine finds its cluster in this order:

1. a ``distributed.Client`` passed as ``dask_client=`` (left alone on exit);
2. the scheduler the launcher published in ``dask.config`` (``polars-hpc.scheduler-address``,
   set by ``python -m launcher.run`` through ``DASK_POLARS_HPC__SCHEDULER_ADDRESS``), so the same
   script runs under ``srun`` and on a laptop without importing the launcher;
3. a new :func:`engine.local_cluster.start_local_cluster`: one worker per GPU, else CPU workers.

This module is also a nanny preload alias: ``--preload-nanny engine.dask`` does what
``--preload-nanny preload`` does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from engine.cluster_info import WorkerInfo, describe_this_worker, in_rank_order
from engine.hardware_binding import bind_workers
from engine.local_cluster import plan_this_host, start_local_cluster
from engine.options import StreamingOptions
from engine.progress import observe_query
from preload.ranks import refuse_inside_rrun

if TYPE_CHECKING:
    from types import TracebackType

    from distributed import Client, LocalCluster
    from polars.lazyframe.opt_flags import QueryOptFlags

    from engine.backend import DeviceBackend
    from engine.executor.dispatch import DistributedQueryResult
    from engine.executor.results import InMemoryQueryResult
    from engine.stats import QueryStats

__all__ = ["SCHEDULER_ADDRESS_CONFIG", "DaskEngine", "dask_setup", "dask_teardown"]

SCHEDULER_ADDRESS_CONFIG = "polars-hpc.scheduler-address"
"""``dask.config`` key through which a launcher tells ``DaskEngine()`` which scheduler to join."""


class DaskEngine(pl.Engine):
    """Run LazyFrames on Dask: the given client, the launcher's cluster, or a new LocalCluster.

    Parameters
    ----------
    dask_client
        An existing client to run on; the engine never closes it or its cluster.
    engine_options
        :class:`engine.options.StreamingOptions` fields as a mapping, e.g.
        ``{"hardware_binding": HardwareBindingPolicy(enabled=False)}``.
    n_workers
        Workers of the LocalCluster the engine starts when it has no cluster to join:
        default one per visible GPU, else ``min(4, available CPUs)``. Under
        ``python -m launcher.run`` it is ignored with a warning: the allocation's ranks are
        the workers, so one script runs on a laptop and in a job unchanged.

    Examples
    --------
    >>> with DaskEngine(n_workers=1) as engine:
    ...     pl.LazyFrame({"a": [1, 2, 3]}).select(pl.sum("a")).collect(engine=engine).item()
    6
    """

    def __init__(
        self,
        *,
        dask_client: Client | None = None,
        engine_options: Mapping[str, Any] | None = None,
        n_workers: int | None = None,
    ) -> None:
        if isinstance(engine_options, StreamingOptions):
            raise TypeError(
                "engine_options takes a mapping of option names to values, got a "
                "StreamingOptions; pass DaskEngine.from_options(options) instead"
            )
        if engine_options is not None and not isinstance(engine_options, Mapping):
            raise TypeError(
                f"engine_options must be a mapping such as {{'fallback_mode': 'raise'}}, got "
                f"{type(engine_options).__name__}; valid names: StreamingOptions' fields"
            )
        self._init(
            StreamingOptions(**dict(engine_options or {})),
            dask_client=dask_client,
            n_workers=n_workers,
        )

    @classmethod
    def from_options(
        cls,
        options: StreamingOptions,
        dask_client: Client | None = None,
        *,
        n_workers: int | None = None,
    ) -> DaskEngine:
        """Create an engine from a ready :class:`engine.options.StreamingOptions`."""
        if not isinstance(options, StreamingOptions):
            raise TypeError(
                f"DaskEngine.from_options needs a StreamingOptions, got {type(options).__name__}"
            )
        engine = cls.__new__(cls)
        engine._init(options, dask_client=dask_client, n_workers=n_workers)
        return engine

    def _init(
        self, options: StreamingOptions, *, dask_client: Client | None, n_workers: int | None
    ) -> None:
        from engine.backend import pick_cluster_backend
        from engine.comm.bootstrap import CommGroup, open_communicators

        refuse_inside_rrun(os.environ, "DaskEngine")
        _check_arguments(dask_client, n_workers)
        self.options = options.resolved(os.environ)
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None
        self._comm: CommGroup | None = None
        self._device: DeviceBackend | None = None
        """The device-resident GPU backend, when every worker runs one (``fragment_engine``)."""
        self._owns_client = dask_client is None
        self._closed = False
        self.last_query_stats: QueryStats | dict[str, Any] | None = None
        """Numbers of the latest ``collect``/``sink_*``: per-stage time, rows, bytes shuffled,
        skew, fallbacks (:class:`engine.stats.QueryStats`; ``print()`` shows a table)."""
        try:
            self._client = dask_client or self._connect(n_workers)
            # Bind before the communicator opens, so its threads inherit the CPU set.
            self.bindings = bind_workers(
                self._client,
                self.options.hardware_binding,
                polars_threads=self.options.num_streaming_threads,
            )
            backend = pick_cluster_backend(self._client, self.options.fragment_engine)
            # One communicator per worker for the engine's lifetime; every query reuses it.
            self._comm = open_communicators(
                self._client,
                transport=self._communicator_transport(backend),
                timeout_s=self.options.comm_timeout_s,
                ucxx_fast_same_host=self.options.ucxx_fast_same_host,
            )
            self._workers = list(self._comm.worker_addresses)
            self._configure_logging()
            if backend == "device":
                self._device = self._start_device()
        except BaseException:
            self.shutdown()
            raise

    def _start_device(self) -> DeviceBackend | None:
        """Bootstrap the device backend; under ``fragment_engine="auto"`` a failure warns.

        ``auto`` promises the best backend that runs: a GPU cluster whose device backend does
        not start (a cudf-polars/driver mismatch, say) still answers, on the CPU executor.
        """
        from engine.backend import start_device

        gpus = [info.gpu_uuid for info in self._placements()]
        try:
            return start_device(self.client, self.options, gpus)
        except Exception as error:
            if self.options.fragment_engine == "gpu":
                raise
            warnings.warn(
                f"the GPU workers' device backend did not start ({type(error).__name__}: "
                f"{error}); queries run on the CPU executor. Set fragment_engine='gpu' to make "
                "this an error, or 'cpu' to silence it",
                UserWarning,
                stacklevel=5,
            )
            return None

    def _communicator_transport(self, backend: str) -> str:
        """Our communicator's transport; on the device backend it carries only CPU fallbacks.

        There rapidsmpf owns UCX in every worker process (one UCX context per process, its
        settings), so ours goes over TCP, and an explicit ``transport="ucxx"`` is refused.
        """
        if backend != "device":
            return self.options.transport
        if self.options.transport == "ucxx":
            raise ValueError(
                "StreamingOptions.transport='ucxx' cannot be used on GPU workers: their "
                "device-resident backend (cudf-polars, rapidsmpf) owns each worker's UCX "
                "context; leave transport='auto' (our communicator then uses tcp for CPU "
                "fallbacks), or set fragment_engine='cpu' to run on our executor over UCXX"
            )
        return "tcp"

    def _configure_logging(self) -> None:
        """Prefix every worker's log lines with its rank and host; apply ``log_level``."""
        from engine.logs import configure_logging, configure_worker_logging

        level = self.options.log_level
        if level is not None:
            configure_logging(level)
        ranks = {address: rank for rank, address in enumerate(self._workers)}
        self.client.run(configure_worker_logging, ranks=ranks, level=level)

    def _connect(self, n_workers: int | None) -> Client:
        import dask.config
        from distributed import Client

        address = dask.config.get(SCHEDULER_ADDRESS_CONFIG, None)
        if address:
            client = _join_scheduler(address)
            if n_workers is not None:
                # The same script runs on a laptop (n_workers applies) and in an allocation,
                # where the job's ranks already are the workers.
                warnings.warn(
                    f"DaskEngine(n_workers={n_workers}) is ignored: this script runs under "
                    f"python -m launcher.run, whose cluster ({address}) has "
                    f"{len(client.ncores())} worker(s), one per rank of the allocation",
                    UserWarning,
                    stacklevel=4,
                )
            return client
        threads = self.options.num_streaming_threads
        self._cluster = start_local_cluster(plan_this_host(n_workers, polars_threads=threads))
        return Client(self._cluster)

    @property
    def name(self) -> str:
        """Engine identifier polars shows in plans and errors."""
        return "dask"

    @property
    def client(self) -> Client:
        """The Dask client this engine runs on."""
        self._check_open()
        assert self._client is not None
        return self._client

    @property
    def nranks(self) -> int:
        """Number of ranks (workers) queries run on."""
        self._check_open()
        return len(self._workers)

    def gather_cluster_info(self) -> list[WorkerInfo]:
        """Placement of every worker, in rank order (host, then local index).

        ``memory_resource`` names the RMM resource queries allocate from on GPU workers (the
        one ``memory_resource_config`` asked for), ``None`` on CPU workers.
        """
        self._check_open()
        infos = self._placements()
        if self._device is None:
            return infos
        resource = self._device.memory_resource
        return [dataclasses.replace(info, memory_resource=resource) for info in infos]

    def _placements(self) -> list[WorkerInfo]:
        records = self.client.run(describe_this_worker)
        return in_rank_order(records.values())

    def collect(
        self,
        lf: pl.LazyFrame,
        *,
        optimizations: QueryOptFlags | None = None,
        background: bool = False,
        post_opt_callback: Any = None,
    ) -> pl.DataFrame:
        """Run ``lf`` and return the whole result in this process.

        polars calls this for ``lf.collect(engine=engine)``; ``engine.collect(lf)`` works too
        (``optimizations`` defaults to polars' own defaults).
        """
        self._check_open()
        if background:
            raise NotImplementedError(
                "DaskEngine does not run collect(background=True); call collect() in a thread, "
                "or use engine.execute(lf) to keep the result on the workers"
            )
        from engine.executor.client import collect_on_client, collect_query

        small = collect_on_client(self, lf, _optimizations(optimizations))
        if small is not None:
            return small
        if self._device is not None:
            from engine.backend import collect_on_device

            return collect_on_device(self, lf, _optimizations(optimizations))
        with observe_query(self.options.progress) as observation:
            result = collect_query(self, lf, _optimizations(optimizations))
        if observation.stats is not None:
            self.last_query_stats = observation.stats
        return result

    def execute(
        self, lf: pl.LazyFrame, *, optimizations: QueryOptFlags | None = None
    ) -> DistributedQueryResult | InMemoryQueryResult:
        """Run ``lf``; the result's parts stay on the workers until read.

        ``engine.execute(lf)`` and ``lf.execute(engine=engine)`` are the same call. The result
        is polars' ``QueryResult``: ``res.head`` (the first 5 rows, also callable:
        ``res.head(3)``), ``res.n_rows_total`` (counted on the workers) and ``res.lazy()``
        (fetches every part). A query that runs on the client gives the same interface.

        >>> with DaskEngine(n_workers=1) as engine:
        ...     res = engine.execute(pl.LazyFrame({"a": [1, 2, 3]}).select(pl.col("a") * 2))
        ...     res.head(2)["a"].to_list(), res.n_rows_total
        ([2, 4], 3)
        """
        from polars.lazyframe.query_result import SingleNodeQueryResult

        from engine.executor.client import collect_on_client, execute_query
        from engine.executor.results import InMemoryQueryResult

        self._check_open()
        small = collect_on_client(self, lf, _optimizations(optimizations))
        if small is not None:
            return InMemoryQueryResult(small)
        if self._device is not None:  # the result is gathered: cudf-polars keeps no handle
            from engine.backend import collect_on_device

            return InMemoryQueryResult(collect_on_device(self, lf, _optimizations(optimizations)))
        result = execute_query(self, lf, _optimizations(optimizations))
        if isinstance(result, SingleNodeQueryResult):  # ran on the client: same interface
            return InMemoryQueryResult(result.lazy().collect())
        return result

    def sink_parquet(self, lf: pl.LazyFrame, path: Any, **kwargs: Any) -> None:
        """Each rank writes ``path/part.<rank>.<i>.parquet``; returns when all are written."""
        self._sink(lf, "parquet", path, kwargs)

    def sink_ipc(self, lf: pl.LazyFrame, path: Any, **kwargs: Any) -> None:
        """Each rank writes ``path/part.<rank>.<i>.arrow``; returns when all are written."""
        self._sink(lf, "ipc", path, kwargs)

    def sink_csv(self, lf: pl.LazyFrame, path: Any, **kwargs: Any) -> None:
        """Each rank writes ``path/part.<rank>.<i>.csv``; returns when all are written."""
        self._sink(lf, "csv", path, kwargs)

    def sink_ndjson(self, lf: pl.LazyFrame, path: Any, **kwargs: Any) -> None:
        """Each rank writes ``path/part.<rank>.<i>.ndjson``; returns when all are written."""
        self._sink(lf, "ndjson", path, kwargs)

    def _sink(self, lf: pl.LazyFrame, file_format: Any, path: Any, kwargs: Any) -> None:
        from engine.executor.client import sink_query

        self._check_open()
        if self._device is not None:
            from engine.backend import sink_on_device

            sink_on_device(self, lf, file_format, path, kwargs)
            return
        with observe_query(self.options.progress) as observation:
            sink_query(self, lf, file_format, path, kwargs)
        if observation.stats is not None:
            self.last_query_stats = observation.stats

    def explain(
        self,
        lf: pl.LazyFrame,
        *,
        format: Literal["text", "dot", "png", "svg", "pdf"] = "text",
        path: str | os.PathLike[str] | None = None,
    ) -> str | bytes:
        """The distributed plan of ``lf``: stages, exchanges and fallbacks.

        ``format="text"``: an indented tree; ``"dot"``: the stage graph in Graphviz dot;
        ``"png"``/``"svg"``/``"pdf"``: that graph drawn by Graphviz's ``dot`` program (bytes).
        With ``path`` the result is also written there (an image format may then be taken
        from the suffix: ``path="plan.png"``).
        """
        from engine.profile import render_plan

        self._check_open()
        if self._device is not None:
            from engine.backend import explain_on_device

            return explain_on_device(self, lf, format, path)
        return render_plan(self, lf, format, path)

    def shutdown(self) -> None:
        """Close what this engine created: communicators, client, LocalCluster. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._device is not None:
            with contextlib.suppress(Exception):
                self._device.shutdown()
        if self._comm is not None:
            with contextlib.suppress(Exception):
                self._comm.close()
        if self._client is not None and self._owns_client:
            with contextlib.suppress(Exception):
                self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                "this DaskEngine was shut down; create a new DaskEngine() to run more queries"
            )

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        if self._closed:
            return "DaskEngine(closed)"
        return f"DaskEngine(nranks={len(self._workers)}, scheduler={self.client.scheduler.address})"


def _optimizations(optimizations: QueryOptFlags | None) -> QueryOptFlags:
    """The default optimization flags of polars, for a caller (not polars) that gave none."""
    from polars.lazyframe.opt_flags import DEFAULT_QUERY_OPT_FLAGS

    return DEFAULT_QUERY_OPT_FLAGS if optimizations is None else optimizations


def _join_scheduler(address: str) -> Client:
    """A client of the launcher's scheduler, or a clear error.

    An unreachable scheduler fails within Dask's connect timeout
    (``distributed.comm.timeouts.connect``) with the address and where it came from.
    """
    import dask.config
    from distributed import Client

    timeout = dask.config.get("distributed.comm.timeouts.connect")
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as error:
        raise TimeoutError(
            f"DaskEngine found no scheduler at {address} within {timeout} "
            f"(dask.config {SCHEDULER_ADDRESS_CONFIG!r}, set by python -m launcher.run or "
            "DASK_POLARS_HPC__SCHEDULER_ADDRESS): is that job still running? Outside a "
            "launcher, unset it to get a local cluster"
        ) from error


def _check_arguments(dask_client: object, n_workers: object) -> None:
    """Name a bad ``dask_client``/``n_workers`` before anything starts."""
    from distributed import Client

    if dask_client is not None and not isinstance(dask_client, Client):
        raise TypeError(
            f"dask_client must be a distributed.Client, got {type(dask_client).__name__} "
            f"{dask_client!r}; to join a scheduler by address pass dask_client=Client(address)"
        )
    if n_workers is not None and (
        isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1
    ):
        raise ValueError(f"n_workers={n_workers!r} must be a positive integer, or None (default)")


def dask_setup(nanny: Any) -> None:
    """Nanny preload alias: ``--preload-nanny engine.dask`` equals ``--preload-nanny preload``."""
    import preload

    preload.dask_setup(nanny)


def dask_teardown(nanny: Any) -> None:
    """Nanny preload alias, teardown half."""
    import preload

    preload.dask_teardown(nanny)
