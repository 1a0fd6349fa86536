"""Which backend runs a query: the one place that picks.

Two backends, one folder each, neither importing the other:

- ``cpu``: our executor (:mod:`engine.executor`): the planner's stages, one task per rank,
  every fragment collected by polars.
- ``device``: the device-resident GPU backend (:mod:`engine.gpu.device`): cudf-polars'
  streaming engine on every worker's GPU, from the read to the result; :func:`start_device`
  bootstraps it once per engine, on the client.

:func:`choose_cluster_backend` decides from ``StreamingOptions.fragment_engine`` and what every
worker (and the client, which translates queries for the device) can run. A query the device
backend refuses runs on the CPU executor, under the ``fallback_mode`` rules.

The GPU *fragment* path that used to live here (the CPU plan walk with each fragment copied to a
GPU and back) was removed: on one H100 at TPC-H SF10 it was 26x slower than cudf-polars' own
``DaskEngine`` (issue 14; benchmarks/README.md "GPU workers").
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from engine.comm.base import PeerFailedError
from engine.executor.client import collect_query, sink_query
from engine.executor.dispatch import LOST_WORKER_POLL_S, present_workers
from engine.executor.sinks import sink_request, staged_sink, write_part
from engine.gpu.device import DeviceRefusal, device_readiness
from engine.progress import progress_wanted
from engine.stats import QueryStats

if TYPE_CHECKING:
    from distributed import Client
    from polars.lazyframe.opt_flags import QueryOptFlags

    from engine.gpu.device import DeviceBackend
    from engine.options import FragmentEngine, StreamingOptions

__all__ = [
    "DEVICE_OPERATION",
    "ClusterBackend",
    "choose_cluster_backend",
    "collect_on_device",
    "explain_on_device",
    "pick_cluster_backend",
    "sink_on_device",
    "start_device",
]

logger = logging.getLogger(__name__)

DEVICE_OPERATION = "device: cudf-polars streaming, whole query"
"""The one stage a device query's ``last_query_stats`` shows: cudf-polars plans its own."""

ClusterBackend = Literal["cpu", "device"]


def _worker_readiness(dask_worker: object = None) -> str | None:
    """Run on a worker: ``None`` when it can join the device backend, else why not."""
    return device_readiness()


def pick_cluster_backend(client: Client, setting: FragmentEngine) -> ClusterBackend:
    """Ask every worker (and this process) what it can run, then :func:`choose_cluster_backend`."""
    if setting == "cpu":
        return "cpu"
    workers: dict[str, str | None] = client.run(_worker_readiness)
    return choose_cluster_backend(setting, workers, device_readiness(needs_gpu=False))


def choose_cluster_backend(
    setting: FragmentEngine,
    workers: Mapping[str, str | None],
    client_problem: str | None,
) -> ClusterBackend:
    """``device`` when asked (or, ``auto``, when possible), else ``cpu``; refuse what cannot be.

    ``workers`` maps each worker to why it cannot run the device backend (``None``: it can);
    ``client_problem`` is the same for this process.

    >>> choose_cluster_backend("auto", {"w0": None, "w1": None}, None)
    'device'
    >>> choose_cluster_backend("auto", {"w0": "no GPU", "w1": "no GPU"}, None)
    'cpu'
    >>> choose_cluster_backend("gpu", {"w0": None, "w1": "no GPU assigned"}, None)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: StreamingOptions.fragment_engine='gpu' needs every worker on a GPU with ...
    """
    if setting == "cpu":
        return "cpu"
    problems = [f"worker {address}: {why}" for address, why in workers.items() if why]
    if client_problem is not None:
        problems.append(f"this client process: {client_problem}")
    if not problems:
        return "device"
    if setting == "gpu":
        raise RuntimeError(
            "StreamingOptions.fragment_engine='gpu' needs every worker on a GPU with "
            f"cudf-polars: {'; '.join(problems)}; use fragment_engine='cpu' or 'auto', or start "
            "the cluster on GPU nodes only"
        )
    able = len(workers) - sum(1 for why in workers.values() if why)
    if able:  # a mixed cluster: the device backend needs every rank
        warnings.warn(
            f"{able} of {len(workers)} workers could run on their GPU, but the device backend "
            f"needs every one ({'; '.join(problems)}); every query runs on the CPU executor. "
            "Set fragment_engine='cpu' to silence this",
            UserWarning,
            stacklevel=4,
        )
    return "cpu"


def start_device(
    client: Client, options: StreamingOptions, gpu_uuids: Sequence[str | None]
) -> DeviceBackend:
    """Bootstrap the device backend on every worker of ``client`` (once per engine)."""
    from engine.gpu.device import DeviceBackend, device_settings

    return DeviceBackend(client, device_settings(options, gpu_uuids))


def _on_refusal(refusal: DeviceRefusal, mode: str) -> None:
    """``fallback_mode`` for a query cudf-polars refuses: raise, or warn, before the CPU runs it."""
    listed = "; ".join(refusal.operations)
    if mode == "raise":
        raise NotImplementedError(
            f"cudf-polars cannot run this query on the GPU: {listed}. Set "
            "StreamingOptions(fallback_mode='warn') or 'silent' to run it on the CPU executor"
        ) from refusal
    if mode == "warn":
        warnings.warn(
            f"DaskEngine fallback: cudf-polars cannot run {listed}; the query runs on the CPU "
            "executor of the same workers",
            UserWarning,
            stacklevel=5,
        )


def _device_collect(
    engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags
) -> pl.DataFrame | None:
    """The device's answer with its stats recorded, or ``None`` after a refusal was handled."""
    show = progress_wanted(engine.options.progress, sys.stderr)
    if show:
        print(f"[device] query on {engine.nranks} GPU rank(s)...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        result = _watched(engine, lf, optimizations)
    except DeviceRefusal as refusal:
        _on_refusal(refusal, engine.options.fallback_mode)
        return None
    seconds = time.perf_counter() - start
    engine.last_query_stats = QueryStats.of_whole_query(
        DEVICE_OPERATION, seconds=seconds, nranks=engine.nranks, rows_out=result.height
    )
    if show:
        print(f"[device] done in {seconds:.2f} s, {result.height:,} rows", file=sys.stderr)
    return result


def _watched(engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags) -> pl.DataFrame:
    """The device's answer, waited for while the ranks' workers are watched.

    cudf-polars' ``Client.run`` notices no dead worker: the other ranks wait for it in a
    rapidsmpf collective, and so would this process, forever. Here a worker that left the
    cluster raises :class:`PeerFailedError` naming its rank within ``LOST_WORKER_POLL_S``, and
    Ctrl-C returns at once. cudf-polars cannot cancel a query, so neither stops the ranks:
    after a lost worker this engine refuses further queries (the others are stuck in the
    collective); after Ctrl-C the next query starts once the interrupted one has finished.
    """
    device = engine._device
    if device.lost is not None:
        raise PeerFailedError(device.lost)
    if device.busy:
        logger.warning(
            "the GPU ranks still run an interrupted query (cudf-polars cannot cancel one); "
            "this query starts when it finishes"
        )
        _wait_watching(engine, device.running, report_errors=False)
    return _wait_watching(engine, device.start(lf, optimizations), report_errors=True)


def _wait_watching(engine: Any, future: Any, *, report_errors: bool) -> Any:
    """``future``'s result once it is done, unless a rank's worker leaves the cluster first."""
    while True:
        done, _ = concurrent.futures.wait([future], timeout=LOST_WORKER_POLL_S)
        if done and not report_errors:
            return None
        if done and future.exception() is None:
            return future.result()
        lost = _lost_device_rank(engine)
        if lost is not None:
            raise lost from future.exception() if done else None
        if done:  # a failure with every worker there: the query's own error
            return future.result()


def _lost_device_rank(engine: Any) -> PeerFailedError | None:
    """A ``PeerFailedError`` for the first rank whose worker left the cluster, else ``None``.

    The device backend is marked lost with it. Also asked when cudf-polars' ``Client.run``
    itself failed: a dead worker can surface there first, as a connection error that names no
    rank.
    """
    present = present_workers(engine.client)
    lost = [(rank, a) for rank, a in enumerate(engine._workers) if a not in present]
    if not lost:
        return None
    rank, address = lost[0]
    engine._device.lost = (
        f"rank {rank}'s worker {address} left the cluster during a device query (its process "
        "died or was killed: see that worker's log); the other GPU ranks wait for it in a "
        "collective, so this DaskEngine cannot run queries any more: create a new DaskEngine"
    )
    return PeerFailedError(engine._device.lost)


def collect_on_device(engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags) -> pl.DataFrame:
    """``collect`` on the device backend; a refused query runs on the CPU executor."""
    result = _device_collect(engine, lf, optimizations)
    return collect_query(engine, lf, optimizations) if result is None else result


def sink_on_device(
    engine: Any, lf: pl.LazyFrame, file_format: Any, path: Any, kwargs: dict[str, Any]
) -> None:
    """``sink_*`` on the device backend: computed on the GPUs, written as one staged part.

    The result is gathered here and written by this process with the same two-phase commit as
    the CPU executor's parts (staging directory, rename once complete). A refused query is
    sunk by the CPU executor, each rank writing its own parts.
    """
    request = sink_request(file_format, path, kwargs)
    result = _device_collect(engine, lf, kwargs["optimizations"])
    if result is None:
        sink_query(engine, lf, file_format, path, kwargs)
        return
    with staged_sink(request) as (staging, staged):
        staged.append(write_part(staging, result.lazy(), 0, 0))


def explain_on_device(
    engine: Any, lf: pl.LazyFrame, requested: str, path: str | os.PathLike[str] | None
) -> str | bytes:
    """``explain`` on the device backend: cudf-polars' physical plan, headed by who runs it.

    A query cudf-polars refuses is explained as the CPU executor's plan, headed by the refusal.
    """
    from engine.profile import render_plan

    header = (
        f"engine: device-resident on {engine.nranks} GPU rank(s), cudf-polars streaming "
        f"(rapidsmpf shuffles over UCXX); memory resource: {engine._device.memory_resource}"
    )
    try:
        plan = engine._device.explain(lf)
    except DeviceRefusal as refusal:
        refused = (
            f"engine: CPU executor on {engine.nranks} rank(s); cudf-polars refuses "
            f"{'; '.join(refusal.operations)}"
        )
        if requested != "text":
            return render_plan(engine, lf, requested, path)
        text = refused + "\n" + str(render_plan(engine, lf, "text", None))
    else:
        if requested != "text" or (path is not None and Path(path).suffix not in ("", ".txt")):
            raise NotImplementedError(
                f"explain(format={requested!r}) draws the CPU executor's stage graph, but this "
                "query runs device-resident, planned by cudf-polars; use format='text'"
            )
        text = header + "\n" + plan
    if path is not None:
        Path(path).write_text(text + "\n")
    return text
