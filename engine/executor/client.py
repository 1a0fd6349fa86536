"""Client side of one query: plan, apply the fallback rules, dispatch, assemble or write.

:class:`engine.dask.DaskEngine`'s ``collect``, ``execute`` and ``sink_*`` are thin
delegates to the functions here, so the engine class stays about lifecycle.

Failure rules kept here: a query polars rejects raises polars' own error (type and message);
a query that fails on the workers, or that the user interrupts (Ctrl-C), is cancelled on every
rank before the error leaves this module, so the engine can run the next query at once.
The input file at fault is named by :mod:`engine.plan.input_files`.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from engine.comm.base import PeerFailedError
from engine.executor.dispatch import (
    CommunicatorLookup,
    DistributedQueryResult,
    RankOutput,
    RankSettings,
    apply_fallback_mode,
    cancel_query_on_worker,
    gather_outputs,
    new_query_id,
    present_workers,
    submit_ranks,
)
from engine.executor.polars_environ import client_polars_environ
from engine.executor.rank import PartitionLimits
from engine.executor.results import concat_result
from engine.executor.sinks import (
    SinkFormat,
    SinkRequest,
    sink_request,
    staged_sink,
    write_part,
)
from engine.plan import DistributedPlan, plan_for_ranks
from engine.plan.input_files import naming_the_file
from engine.plan.nodes import Fallback
from engine.plan.small_inputs import in_memory_input_bytes
from engine.stats import QueryStats

if TYPE_CHECKING:
    from distributed import Client, Future
    from polars.lazyframe.opt_flags import QueryOptFlags

    from engine.options import StreamingOptions

__all__ = [
    "CLIENT_FAST_PATH",
    "collect_on_client",
    "collect_query",
    "execute_query",
    "last_plan",
    "sink_query",
]

CLIENT_FAST_PATH = "polars in the calling process (in-memory inputs below client_fast_path_bytes)"
"""The one stage ``last_query_stats`` shows for a query the fast path ran."""

_LAST_PLAN: weakref.WeakKeyDictionary[Any, DistributedPlan] = weakref.WeakKeyDictionary()


def last_plan(engine: object) -> DistributedPlan | None:
    """The plan of the engine's latest query (tests assert "zero fallbacks" with it)."""
    return _LAST_PLAN.get(engine)


def _plan(
    engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags
) -> tuple[DistributedPlan, pl.DataFrame | None]:
    """The plan of ``lf``, and the answer when polars had to compute it on the client.

    The planner asks polars for row counts and schemas of the inputs, and polars may reject
    those smaller queries with another error than the user's query gets (files with different
    columns: an "extra column" error for the row count, a dtype mismatch for the query). Then
    the user's query runs with polars on the client: it raises polars' own error, or (rarely)
    succeeds, and that answer is returned as a client-side fallback.
    """
    options: StreamingOptions = engine.options
    planning_error: pl.exceptions.PolarsError | None = None
    try:
        plan = plan_for_ranks(
            lf, engine.nranks, broadcast_limit=options.broadcast_limit, optimizations=optimizations
        )
    except pl.exceptions.PolarsError as error:
        planning_error = error
    if planning_error is None:
        _LAST_PLAN[engine] = plan
        apply_fallback_mode(plan.fallbacks, options.fallback_mode)
        return plan, None
    # polars' own engine: it raises polars' own error
    frame = _with_optimizations(lf, optimizations).collect(engine="in-memory")
    reason = (
        f"the planner's row count failed ({type(planning_error).__name__}: {planning_error}), "
        "so polars ran it on the client"
    )
    plan = DistributedPlan(None, frame.schema, (Fallback("query", reason, on_client=True),))
    _LAST_PLAN[engine] = plan
    apply_fallback_mode(plan.fallbacks, options.fallback_mode)
    return plan, frame


def _settings(engine: Any, sink: SinkRequest | None = None) -> RankSettings:
    options: StreamingOptions = engine.options
    comm_id, _ = _comm_handles(engine)
    group = getattr(engine, "_comm", None)
    return RankSettings(
        nranks=engine.nranks,
        comm_id=comm_id,
        query_id=new_query_id(),
        scope_id=group.new_scope_id() if group is not None else 1,
        limits=PartitionLimits(options.target_partition_size, options.max_rows_per_partition),
        sink=sink,
        polars_environ=client_polars_environ(os.environ),
    )


def _comm_handles(engine: Any) -> tuple[str | None, CommunicatorLookup | None]:
    """The engine's communicator id and the worker-side lookup, when it has one."""
    group = getattr(engine, "_comm", None)
    if group is None:
        return None, None
    from engine.executor.comm_lookup import worker_communicator

    return str(group.comm_id), worker_communicator


def _with_optimizations(lf: pl.LazyFrame, optimizations: QueryOptFlags) -> pl.LazyFrame:
    return pl.LazyFrame._from_pyldf(lf._ldf.with_optimizations(optimizations._pyoptflags))


def _check_workers_present(client: Client, workers: list[str]) -> None:
    """Refuse to submit to a rank whose worker is gone: its task would wait forever."""
    present = present_workers(client)
    for rank, address in enumerate(workers):
        if address not in present:
            raise PeerFailedError(
                f"rank {rank}'s worker {address} is no longer in the cluster (its process died "
                "or was restarted); this DaskEngine's ranks are fixed when it starts: create a "
                "new DaskEngine"
            )


def _run_ranks(
    engine: Any, plan: DistributedPlan, sink: SinkRequest | None = None
) -> tuple[list[RankOutput], float]:
    """Submit one task per rank and wait for all; on any failure cancel the query everywhere.

    Any ``BaseException`` counts: a ``KeyboardInterrupt`` (Ctrl-C) arrives here while the
    client waits, and the ranks must not keep computing for a query nobody waits for.
    """
    client: Client = engine.client
    workers: list[str] = engine._workers
    _check_workers_present(client, workers)
    _, lookup = _comm_handles(engine)
    settings = _settings(engine, sink)
    start = time.perf_counter()
    futures = submit_ranks(client, workers, plan, settings, lookup)
    try:
        outputs = gather_outputs(client, futures, workers)
    except BaseException:
        _cancel(client, settings.query_id, futures)
        raise
    return outputs, time.perf_counter() - start


def _cancel(client: Client, query_id: str, futures: list[Future]) -> None:
    """Stop every rank of ``query_id`` at its next exchange and release its tasks."""
    with contextlib.suppress(Exception):
        client.run(cancel_query_on_worker, query_id, wait=False)
    with contextlib.suppress(Exception):
        client.cancel(futures, reason="polars-hpc query cancelled", msg="query cancelled")


def collect_on_client(
    engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags
) -> pl.DataFrame | None:
    """The answer of a query small enough for polars in this process, else ``None``.

    Small: every input is an in-memory frame, together at most
    ``options.client_fast_path_bytes`` (see :mod:`engine.plan.small_inputs`).
    """
    limit = engine.options.client_fast_path_bytes
    if limit == 0:
        return None
    size = in_memory_input_bytes(lf)
    if size is None or size > limit:
        return None
    start = time.perf_counter()
    result = _with_optimizations(lf, optimizations).collect(engine="in-memory")
    engine.last_query_stats = QueryStats.of_whole_query(
        CLIENT_FAST_PATH, seconds=time.perf_counter() - start, nranks=1, rows_out=result.height
    )
    return result


def collect_query(engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags) -> pl.DataFrame:
    """``collect``: every rank's part, fetched from the workers, in rank order."""
    with naming_the_file(lf):
        return _collect(engine, lf, optimizations)


def _collect(engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags) -> pl.DataFrame:
    plan, answer = _plan(engine, lf, optimizations)
    if answer is not None:
        return answer
    if plan.root is None:
        return _with_optimizations(lf, optimizations).collect(engine="in-memory")
    outputs, elapsed_s = _run_ranks(engine, plan)
    frames = [out.frame for out in outputs if out.frame is not None]
    _record_stats(engine, plan, sum(out.bytes_sent for out in outputs), elapsed_s)
    return concat_result(plan, frames)


def execute_query(engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags) -> Any:
    """``execute``: a ``QueryResult`` whose parts stay on the workers until read."""
    with naming_the_file(lf):
        plan, answer = _plan(engine, lf, optimizations)
    if plan.root is None:
        from polars.lazyframe.query_result import SingleNodeQueryResult

        if answer is None:
            answer = _with_optimizations(lf, optimizations).collect(engine="in-memory")
        return SingleNodeQueryResult(answer)
    client: Client = engine.client
    _check_workers_present(client, engine._workers)
    _, lookup = _comm_handles(engine)
    futures = submit_ranks(client, engine._workers, plan, _settings(engine), lookup)
    return DistributedQueryResult(client, plan, futures, engine._workers)


def sink_query(
    engine: Any, lf: pl.LazyFrame, file_format: SinkFormat, path: Any, kwargs: Mapping[str, Any]
) -> None:
    """``sink_*``: each rank writes ``path/part.<rank>.<i>.<ext>``; returns when all are written."""
    request = sink_request(file_format, path, kwargs)
    with naming_the_file(lf):
        _sink(engine, lf, request, kwargs["optimizations"])


def _sink(
    engine: Any, lf: pl.LazyFrame, request: SinkRequest, optimizations: QueryOptFlags
) -> None:
    plan, answer = _plan(engine, lf, optimizations)
    with staged_sink(request) as (staging, staged):
        if plan.root is None:
            if answer is None:
                answer = _with_optimizations(lf, optimizations).collect(engine="in-memory")
            staged.append(write_part(staging, answer.lazy(), 0, 0))
        else:
            outputs, elapsed_s = _run_ranks(engine, plan, staging)
            staged.extend(path for out in outputs for path in out.files)
    if plan.root is not None:
        _record_stats(engine, plan, sum(out.bytes_sent for out in outputs), elapsed_s)


def _record_stats(engine: Any, plan: DistributedPlan, shuffled: int, elapsed_s: float) -> None:
    """Expose the latest query's numbers as ``engine.last_query_stats`` (benchmarks read it)."""
    engine.last_query_stats = {
        "bytes_shuffled": shuffled,
        "fallbacks": len(plan.fallbacks),
        "seconds": elapsed_s,
    }
