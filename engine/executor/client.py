"""Client side of one query: plan, apply the fallback rules, dispatch, assemble or write.

:class:`engine.dask.DaskEngine`'s ``collect``, ``execute``, ``sink_*`` and ``explain`` are thin
delegates to the functions here, so the engine class stays about lifecycle.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from engine.executor.dispatch import (
    CommunicatorLookup,
    DistributedQueryResult,
    RankSettings,
    apply_fallback_mode,
    gather_outputs,
    gather_result,
    new_query_id,
    submit_ranks,
)
from engine.executor.rank import PartitionLimits
from engine.executor.sinks import SinkFormat, SinkRequest, prepare_sink_directory, sink_request
from engine.plan import DistributedPlan, format_plan, plan_lazyframe

if TYPE_CHECKING:
    from distributed import Client
    from polars.lazyframe.opt_flags import QueryOptFlags

    from engine.options import StreamingOptions

__all__ = ["collect_query", "execute_query", "explain_query", "last_plan", "sink_query"]

_LAST_PLAN: weakref.WeakKeyDictionary[Any, DistributedPlan] = weakref.WeakKeyDictionary()


def last_plan(engine: object) -> DistributedPlan | None:
    """The plan of the engine's latest query (tests assert "zero fallbacks" with it)."""
    return _LAST_PLAN.get(engine)


def _plan(engine: Any, lf: pl.LazyFrame) -> DistributedPlan:
    options: StreamingOptions = engine.options
    plan = plan_lazyframe(lf, broadcast_limit=options.broadcast_limit)
    _LAST_PLAN[engine] = plan
    apply_fallback_mode(plan.fallbacks, options.fallback_mode)
    return plan


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
        fragment_engine=options.fragment_engine,
        sink=sink,
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


def _submit(engine: Any, plan: DistributedPlan, sink: SinkRequest | None = None) -> list[Any]:
    client: Client = engine.client
    _, lookup = _comm_handles(engine)
    return submit_ranks(client, engine._workers, plan, _settings(engine, sink), lookup)


def collect_query(engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags) -> pl.DataFrame:
    """``collect``: every rank's part, fetched from the workers, in rank order."""
    plan = _plan(engine, lf)
    if plan.root is None:
        return _with_optimizations(lf, optimizations).collect()
    start = time.perf_counter()
    result, shuffled = gather_result(engine.client, plan, _submit(engine, plan))
    _record_stats(engine, plan, shuffled, time.perf_counter() - start)
    return result


def execute_query(engine: Any, lf: pl.LazyFrame, optimizations: QueryOptFlags) -> Any:
    """``execute``: a ``QueryResult`` whose parts stay on the workers until read."""
    plan = _plan(engine, lf)
    if plan.root is None:
        from polars.lazyframe.query_result import SingleNodeQueryResult

        return SingleNodeQueryResult(_with_optimizations(lf, optimizations).collect())
    return DistributedQueryResult(engine.client, plan, _submit(engine, plan))


def sink_query(
    engine: Any, lf: pl.LazyFrame, file_format: SinkFormat, path: Any, kwargs: Mapping[str, Any]
) -> None:
    """``sink_*``: each rank writes ``path/part.<rank>.<i>.<ext>``; returns when all are written."""
    request = sink_request(file_format, path, kwargs)
    plan = _plan(engine, lf)
    prepare_sink_directory(request)
    if plan.root is None:
        frame = _with_optimizations(lf, kwargs["optimizations"]).collect()
        from engine.executor.sinks import write_part

        write_part(request, frame.lazy(), 0, 0)
        return
    start = time.perf_counter()
    outputs = gather_outputs(engine.client, _submit(engine, plan, request))
    shuffled = sum(out.bytes_sent for out in outputs)
    _record_stats(engine, plan, shuffled, time.perf_counter() - start)


def _record_stats(engine: Any, plan: DistributedPlan, shuffled: int, elapsed_s: float) -> None:
    """Expose the latest query's numbers as ``engine.last_query_stats`` (benchmarks read it)."""
    engine.last_query_stats = {
        "bytes_shuffled": shuffled,
        "fallbacks": len(plan.fallbacks),
        "seconds": elapsed_s,
    }


def explain_query(engine: Any, lf: pl.LazyFrame) -> str:
    """The distributed plan as text: stages, exchanges, fallbacks."""
    plan = plan_lazyframe(lf, broadcast_limit=engine.options.broadcast_limit)
    return format_plan(plan, engine.nranks)
