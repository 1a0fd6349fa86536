"""The rank executor: where a plan meets a communicator. Every rank runs the same plan (SPMD).

Each plan node becomes, on each rank, a stream of partitions in order. A partition is either a
materialized frame or the DSL JSON of a lazy fragment (a scan slice and the row-wise work on
it), so the next consumer's own work fuses into it and polars pushes projections and predicates
down to the files. Exchanges are collective: every rank reaches them in the same order and draws
the same tags, and received frames are concatenated in source-rank order.
"""

from __future__ import annotations

import io
import json
import logging
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from engine.comm.base import Communicator
from engine.executor.exchange import ROOT, SpillPolicy, allgather_frames, gather_to_root, shuffle
from engine.executor.fragments import FragmentRunner
from engine.executor.frames import (
    concat_frames,
    hash_partition,
    integer_key,
    range_destinations,
    range_partition,
    split_by_destination,
)
from engine.executor.grace import (
    MAX_PASSES,
    PartSpool,
    Spool,
    even_splitters,
    in_passes,
    in_range_passes,
    pass_share,
)
from engine.executor.key_ranges import (
    RankBounds,
    any_spooled,
    choose_splitters,
    pack_bounds,
    pack_spooled,
    sides_bytes,
    unpack_bounds,
)
from engine.plan import dsl
from engine.plan.explain import children_of, plan_stages
from engine.plan.nodes import (
    Aggregate,
    Concat,
    Distinct,
    DistributedPlan,
    FrameSource,
    Join,
    PlanNode,
    RowIndex,
    RowWise,
    ScanSource,
    SingleRank,
    Slice,
    Sort,
    TopK,
    WholeQuery,
    Window,
)
from engine.plan.planner import WINDOW_SEQ, plan_lazyframe
from engine.plan.row_ranges import rank_row_range
from engine.stats import StageRecorder

__all__ = ["Part", "PartitionLimits", "RankExecutor"]

Part = pl.DataFrame | str
"""A partition: a frame in memory, or the DSL JSON of a lazy fragment producing it."""

_LOG = logging.getLogger(__name__)
_SEQ: Final = WINDOW_SEQ
_SEQ_RANK_SHIFT: Final = 40
_ROWS: Final = "__polars_hpc_rows"
_MAX_ROWS: Final = 2**32 - 1
"""Most rows a frame can hold with polars' 32-bit index (larger slice bounds overflow)."""
"""Rows behind each partial of an aggregation without keys."""
_COMBINE: Final[dict[str, Callable[[pl.Expr], pl.Expr]]] = {
    "sum": pl.Expr.sum,
    "min": pl.Expr.min,
    "max": pl.Expr.max,
    "nan_min": pl.Expr.nan_min,
    "nan_max": pl.Expr.nan_max,
    "first": pl.Expr.first,
    "last": pl.Expr.last,
}
_MAX_PENDING_PARTIALS: Final = 16
_SAMPLES_PER_RANK: Final = 128


_GIB: Final = 1 << 30
_MIN_DERIVED_PARTITION: Final = 64 << 20


@dataclass(frozen=True)
class PartitionLimits:
    """How much input a rank processes at a time (from ``StreamingOptions``).

    ``None`` is the default of either option: :meth:`for_worker` derives the byte limit from
    the worker's memory, and there is no row limit.
    """

    target_partition_size: int | None = None
    max_rows_per_partition: int | None = None
    whole_reduced_scans: bool = False
    """Read a scan that a partial aggregation reduces as one partition per rank (set by
    :meth:`for_worker` when neither limit was given)."""

    def for_worker(self, memory_limit: int | None) -> PartitionLimits:
        """An unset byte limit becomes an eighth of ``memory_limit`` (1 GiB without one).

        An eighth leaves room for what else a rank holds at once: a partition's output, the
        partials pending, a broadcast side and received shuffle data (spilled past a quarter).

        >>> PartitionLimits().for_worker(8 << 30).target_partition_size == 1 << 30
        True
        >>> PartitionLimits(target_partition_size=5).for_worker(8 << 30).target_partition_size
        5
        """
        if self.target_partition_size is not None:
            return self
        size = max(_MIN_DERIVED_PARTITION, memory_limit // 8) if memory_limit else _GIB
        whole = self.max_rows_per_partition is None
        return PartitionLimits(size, self.max_rows_per_partition, whole_reduced_scans=whole)

    def rows_per_partition(self, bytes_per_row: float) -> int:
        """Rows per partition: whichever of the byte and row limits comes first."""
        target = self.target_partition_size or _GIB
        by_bytes = int(target // max(bytes_per_row, 1.0))
        rows = by_bytes if self.max_rows_per_partition is None else self.max_rows_per_partition
        return max(1, min(rows, by_bytes))


class RankExecutor:
    """Runs a :class:`DistributedPlan` on one rank.

    Parameters
    ----------
    plan
        The plan every rank runs.
    comm
        This rank's communicator (``comm.rank``, ``comm.nranks``).
    frames
        This rank's row range of each in-memory frame of the plan, by frame index.
    tags
        Source of message tags; every rank draws them in the same order.
    limits
        Partition sizes.
    runner
        Runs fragments with polars (CPU or GPU).
    spill
        Where received shuffle data goes past the rank's memory budget.
    stages
        Measures each stage (``engine.last_query_stats``, progress); default: a recorder
        that only keeps the numbers.
    """

    def __init__(
        self,
        plan: DistributedPlan,
        comm: Communicator,
        frames: Sequence[pl.DataFrame],
        tags: Callable[[], int],
        limits: PartitionLimits | None = None,
        runner: FragmentRunner | None = None,
        spill: SpillPolicy | None = None,
        stages: StageRecorder | None = None,
    ) -> None:
        self.plan = plan
        self.comm = comm
        self.frames = frames
        self.tags = tags
        self.limits = limits or PartitionLimits()
        self.runner = runner or FragmentRunner()
        self.spill = spill or SpillPolicy()
        self.stages = stages or StageRecorder(plan, comm)
        self._whole_shares = (
            _scans_reduced_whole(plan) if self.limits.whole_reduced_scans else set()
        )
        self._reads_left = {n: reads for n, reads in _reads_of(plan).items() if reads > 1}
        self._shared_parts: dict[int, list[Part]] = {}

    def run(self) -> list[pl.DataFrame]:
        """This rank's part of the result, as materialized partitions in order."""
        if self.plan.root is None:
            raise ValueError("this plan runs on the client (root is None), not on ranks")
        return [self.materialize(part) for part in self.stream(self.plan.root)]

    def stream(self, node: PlanNode) -> Iterator[Part]:
        """Partitions of ``node`` on this rank, in order."""
        if id(node) in self._reads_left:
            yield from self._shared(node)
            return
        handler = _STREAMS[type(node)]
        yield from self.stages.record(node, handler(self, node))

    def _shared(self, node: PlanNode) -> Iterator[Part]:
        """A node that several parents read (a common subplan), computed once.

        Its parts are held until its last reader has them.
        """
        parts = self._shared_parts.get(id(node))
        if parts is None:
            handler = _STREAMS[type(node)]
            parts = self._shared_parts[id(node)] = list(
                self.stages.record(node, handler(self, node))
            )
        self._reads_left[id(node)] -= 1
        if not self._reads_left[id(node)]:
            del self._shared_parts[id(node)], self._reads_left[id(node)]
        yield from parts

    def materialize(self, part: Part) -> pl.DataFrame:
        """Run a lazy partition (or pass a frame through)."""
        return part if isinstance(part, pl.DataFrame) else self.runner.collect(self.lazy(part))

    def lazy(self, part: Part) -> pl.LazyFrame:
        """A LazyFrame over a partition, for the consumer to add its own work to."""
        return self.runner.lazy(part)

    # sources ---------------------------------------------------------------------------

    def _scan(self, node: ScanSource) -> Iterator[Part]:
        start, end = rank_row_range(node.total_rows, self.comm.rank, self.comm.nranks)
        step = self.limits.rows_per_partition(node.bytes_per_row)
        if id(node) in self._whole_shares:
            step = max(step, end - start)
        if start == end:
            yield dsl.slice_leaf(node.scan_json, start, 0)
        for offset in range(start, end, step):
            yield dsl.slice_leaf(node.scan_json, offset, min(step, end - offset))

    def _frame(self, node: FrameSource) -> Iterator[Part]:
        frame = self.frames[node.frame_index]
        step = self.limits.rows_per_partition(node.bytes_per_row)
        if frame.height == 0:
            yield frame
        for offset in range(0, frame.height, step):
            yield frame.slice(offset, step)

    # row-wise --------------------------------------------------------------------------

    def _row_wise(self, node: RowWise) -> Iterator[Part]:
        for part in self.stream(node.input):
            if isinstance(part, str):
                yield dsl.fill_leaves(node.template, [part])
            else:
                yield self.runner.run_template(node.template, [part])

    # exchanges -------------------------------------------------------------------------

    def _aggregate(self, node: Aggregate) -> Iterator[Part]:
        keys = [dsl.expr_from_json(k) for k in node.keys]
        if node.outputs is None:
            rounds = [self._aggregate_raw(node, keys, rows) for rows in self._raw_rows(node, keys)]
            results = [frame for frame in rounds if frame is not None]
            result = concat_frames(results) if results else None
        else:
            received = self._shuffle_partials(node, keys)
            result = self._finish_partials(node, received)
        if result is not None:  # ranks that saw no rows may type a column Null
            planned = node.output_schema
            result = result.cast({n: planned[n] for n in result.columns if n in planned})
        if node.maintain_order and _literal_keys(node):
            result = None if result is None else result.drop(_SEQ)  # one group, on rank 0
        elif node.maintain_order:
            result = self._order_by_first_appearance(result)
        if result is None:
            yield pl.DataFrame(schema=node.output_schema)
        else:
            yield result.select(node.output_schema.names()).cast(dict(node.output_schema))

    def _sequenced(self, node: Aggregate) -> Iterator[pl.LazyFrame]:
        """Input partitions as LazyFrames; with ``maintain_order`` numbered in global order."""
        offset = self.comm.rank << _SEQ_RANK_SHIFT
        for part in self.stream(node.input):
            if not node.maintain_order:
                yield self.lazy(part)
                continue
            frame = self.materialize(part)
            seq = pl.int_range(pl.len(), dtype=pl.Int64) + offset
            yield frame.lazy().with_columns(seq.alias(_SEQ))
            offset += frame.height

    def _partial_exprs(self, node: Aggregate) -> tuple[list[pl.Expr], list[pl.Expr]]:
        assert node.outputs is not None
        partial, combine = [], []
        for output in node.outputs:
            for part in output.parts:
                partial.append(dsl.expr_from_json(part.partial))
                combine.append(_COMBINE[part.combine](pl.col(part.name)).alias(part.name))
        if node.maintain_order:
            partial.append(pl.col(_SEQ).min())
            combine.append(pl.col(_SEQ).min())
        if not node.keys:
            partial.append(pl.len().alias(_ROWS))
            combine.append(pl.col(_ROWS).sum())
        return partial, combine

    def _combine(self, node: Aggregate, frames: list[pl.DataFrame]) -> pl.DataFrame:
        """Merge partials; without keys, partials of empty partitions are left out.

        An empty partition's partial ``first``/``last`` is null, which is not the first
        value of the frame (every other partial of an empty partition is neutral anyway).
        """
        _, combine = self._partial_exprs(node)
        frame = concat_frames(frames)
        if node.keys:
            return frame.group_by(list(node.key_names)).agg(combine)
        nonempty = frame.filter(pl.col(_ROWS) > 0)
        return (nonempty if nonempty.height else frame.head(1)).select(combine)

    def _shuffle_partials(self, node: Aggregate, keys: list[pl.Expr]) -> list[pl.DataFrame]:
        partial, _ = self._partial_exprs(node)
        pending: list[pl.DataFrame] = []
        for lf in self._sequenced(node):
            agg = lf.group_by(keys).agg(partial) if keys else lf.select(partial)
            pending.append(self.runner.collect(agg))
            if len(pending) >= _MAX_PENDING_PARTIALS:
                pending = [self._combine(node, pending)]
        if not pending:
            empty = pl.DataFrame(schema=node.input_schema).lazy()
            if node.maintain_order:
                empty = empty.with_columns(pl.lit(0, pl.Int64).alias(_SEQ))
            agg = empty.group_by(keys).agg(partial) if keys else empty.select(partial)
            pending.append(self.runner.collect(agg))
        # One partial is already one row per group: combining it again would redo its group-by.
        local = pending[0] if len(pending) == 1 else self._combine(node, pending)
        if not node.keys:
            return gather_to_root(self.comm, self.tags(), local)
        key_columns = [pl.col(name) for name in node.key_names]
        (outgoing,) = self._partition_for_ranks([local], [key_columns])
        return shuffle(self.comm, self.tags(), outgoing, self.spill)

    def _finish_partials(
        self, node: Aggregate, received: list[pl.DataFrame]
    ) -> pl.DataFrame | None:
        if not received:
            return None
        assert node.outputs is not None
        finals: list[pl.Expr] = [pl.col(name) for name in node.key_names]
        for output in node.outputs:
            finals.append(dsl.expr_from_json(output.final).alias(output.name))
        if node.maintain_order:
            finals.append(pl.col(_SEQ))
        key_columns = [pl.col(name) for name in node.key_names]
        results = [
            self._combine(node, [partials]).select(finals)
            for (partials,) in in_passes([received], [key_columns], self.spill)
        ]
        return concat_frames(results)

    def _raw_rows(self, node: Aggregate, keys: list[pl.Expr]) -> Iterator[Iterable[pl.DataFrame]]:
        """The rows this rank aggregates, in rounds: one, or one per exchange pass.

        On one rank the rows are a stream, so the passes after it take them piecewise.
        """
        columns = list(node.needed_columns or ())
        if node.maintain_order:
            columns.append(_SEQ)
        rows = (self.runner.collect(lf.select(columns)) for lf in self._sequenced(node))
        if self.comm.nranks == 1:
            yield rows
        elif not node.keys or _literal_keys(node):  # one group: polars makes it even of no rows
            yield gather_to_root(self.comm, self.tags(), concat_frames(list(rows)))
        else:
            spool = Spool(self.spill, keys)
            for frame in rows:
                spool.add(frame)
            local = spool if spool.spooled else spool.frame()
            values, gathered = self._key_ranges([local], [keys])
            if any_spooled(gathered):
                del local
                for (received,) in self._exchanged_in_passes([spool], [keys]):
                    yield received
                return
            splitters = choose_splitters(gathered, 1, ranges_only=False)
            (outgoing,) = self._partition([local], [keys], values, splitters)  # type: ignore[list-item]
            del local, values, spool
            yield shuffle(self.comm, self.tags(), outgoing, self.spill)

    def _exchanged_in_passes(
        self, spools: list[Spool], keys: Sequence[Sequence[pl.Expr]]
    ) -> Iterator[list[list[pl.DataFrame]]]:
        """Each side exchanged one pass at a time (:class:`engine.executor.grace.Spool`).

        Some rank's side did not fit its memory: every rank then sends pass by pass, each pass
        hashed to the ranks, so none holds more than a pass of what it sends. Yields, per pass,
        what every rank sent here of each side, by source rank.
        """
        try:
            for pieces in zip(*(spool.passes() for spool in spools), strict=True):
                yield [
                    shuffle(
                        self.comm, self.tags(), hash_partition(p, k, self.comm.nranks), self.spill
                    )
                    for p, k in zip(pieces, keys, strict=True)
                ]
        finally:
            for spool in spools:
                spool.remove()

    def _spooled(self, node: PlanNode, keys: Sequence[pl.Expr]) -> Spool:
        """This rank's partitions of ``node``, materialized into a :class:`Spool`."""
        spool = Spool(self.spill, keys)
        for part in self.stream(node):
            spool.add(self.materialize(part))
        return spool

    def _aggregate_raw(
        self, node: Aggregate, keys: list[pl.Expr], received: Iterable[pl.DataFrame]
    ) -> pl.DataFrame | None:
        aggs = [dsl.expr_from_json(a) for a in node.aggs]
        if node.maintain_order:
            aggs.append(pl.col(_SEQ).min())
        split_by = [] if _literal_keys(node) else keys
        results = []
        for (rows,) in in_passes([received], [split_by], self.spill):
            if not rows.width:  # no frames: a stream of none, or not the root of a gather
                continue
            query = rows.lazy().group_by(keys).agg(aggs) if keys else rows.lazy().select(aggs)
            results.append(self.runner.collect(query))
        return concat_frames(results) if results else None

    def _order_by_first_appearance(self, result: pl.DataFrame | None) -> pl.DataFrame | None:
        """Groups in order of first appearance: gather to rank 0, sort by first row number."""
        gathered = gather_to_root(self.comm, self.tags(), result)
        if self.comm.rank != ROOT:
            return None
        return concat_frames(gathered).sort(_SEQ).drop(_SEQ)

    def _slice(self, node: Slice) -> Iterator[Part]:
        wanted = None if node.offset < 0 else min(node.offset + (node.length or 0), _MAX_ROWS)
        frames: list[pl.DataFrame] = []
        rows = 0
        for part in self.stream(node.input):
            if wanted is not None and rows >= wanted:
                break
            lf = self.lazy(part)
            frame = self.runner.collect(lf.head(wanted - rows) if wanted is not None else lf)
            frames.append(frame)
            rows += frame.height
        local = concat_frames(frames, node.output_schema)
        local = local.head(wanted) if wanted is not None else local.tail(-node.offset)
        gathered = gather_to_root(self.comm, self.tags(), local)
        if self.comm.rank == ROOT:
            yield concat_frames(gathered).slice(node.offset, node.length)
        else:
            yield pl.DataFrame(schema=node.output_schema)

    def _single_rank(self, node: SingleRank) -> Iterator[Part]:
        gathered = []
        for child in node.inputs:
            local = concat_frames([self.materialize(p) for p in self.stream(child)])
            gathered.append(concat_frames(gather_to_root(self.comm, self.tags(), local)))
        if self.comm.rank != ROOT:
            yield pl.DataFrame(schema=node.output_schema)
        elif not node.inputs:
            yield self.runner.collect(dsl.lazyframe_from_dsl(node.template))
        else:
            yield self.runner.run_template(node.template, list(gathered))

    def _whole_query(self, node: WholeQuery) -> Iterator[Part]:
        """Polars runs the query; inputs above the partition size stream (memory bound).

        Below it, polars' own choice (``engine="auto"``, the in-memory engine unless the
        user's ``POLARS_ENGINE_AFFINITY`` says otherwise), as ``collect()`` in one process
        would: polars' streaming engine was 16% slower over TPC-H SF1 on 2 cores, 2x on Q21,
        and panics on Q11's decimal sum. Input over the spill budget runs in stages instead
        (:meth:`_in_stages`); input of unknown size (an IPC scan polars does not show, a URL)
        stays one query, as before the stages.
        """
        over_budget = node.input_bytes > (self.spill.budget_bytes or 0)
        if self.spill.bounded and over_budget and math.isfinite(node.input_bytes):
            staged = self._in_stages(node)
            if staged is not None:
                yield from staged
                return
        streams = node.input_bytes > (self.limits.target_partition_size or _GIB)
        yield self.runner.run_whole(node.query, streams, node.optimizations)

    def _in_stages(self, node: WholeQuery) -> Iterator[pl.DataFrame] | None:
        """The query planned in stages on this rank, whose joins and aggregations run in passes.

        Neither of polars' engines bounds a join's or a group-by's hash tables: TPC-H Q21 at
        SF10 peaks at 4.4 GiB in memory and 7.5 GiB streaming. Staged, every join and
        aggregation holds one pass of its keys at a time (:mod:`engine.executor.grace`).
        ``None`` when the query has no staged plan (polars cannot serialize it as DSL).
        """
        plan = plan_lazyframe(pl.LazyFrame.deserialize(io.BytesIO(node.query)))
        if plan.root is None:
            return None
        _LOG.info(
            "rank %d: the query reads an estimated %.2f GiB, over the memory budget of "
            "%.2f GiB: it runs in stages, joins and aggregations in passes that fit",
            self.comm.rank,
            node.input_bytes / _GIB,
            (self.spill.budget_bytes or 0) / _GIB,
        )
        staged = RankExecutor(
            plan,
            self.comm,
            plan.frames,
            self.tags,
            self.limits,
            self.runner,
            self.spill,
            self.stages,
        )
        return (staged.materialize(part) for part in staged.stream(plan.root))

    def _local(self, node: PlanNode) -> pl.DataFrame:
        """All of this rank's partitions of ``node``, materialized and concatenated."""
        return concat_frames([self.materialize(part) for part in self.stream(node)])

    def _join(self, node: Join) -> Iterator[Part]:
        if node.strategy == "shuffle":
            yield from self._join_on_real_sizes(node)
            return
        broadcast_right = node.strategy == "broadcast_right"
        small_side, streamed = (
            (node.right, node.left) if broadcast_right else (node.left, node.right)
        )
        local_small = self._local(small_side)
        other_side = "left" if broadcast_right else "right"
        if node.reconsider_broadcast and _in_memory(streamed) and other_side in node.broadcastable:
            yield from self._join_smaller_side_broadcast(node, local_small, self._local(streamed))
            return
        small = concat_frames(allgather_frames(self.comm, self.tags(), local_small))
        for part in self.stream(streamed):
            inputs = [part, small] if broadcast_right else [small, part]
            yield self.runner.run_template(node.template, inputs)

    def _join_smaller_side_broadcast(
        self, node: Join, local_small: pl.DataFrame, local_streamed: pl.DataFrame
    ) -> Iterator[pl.DataFrame]:
        """A broadcast join whose streamed side is in memory: broadcast whichever is smaller.

        The planner sizes a join's output as the sum of its inputs, so a join of joins looks
        larger than it is: TPC-H Q10's 115 thousand order lines were streamed against all of
        customer (32 MiB broadcast) where 4 MiB of lines would do. When both sides hold ranges
        of one sorted key (Q9's order lines against orders), range-partitioning both moves
        almost nothing, and no rank joins a whole side.
        """
        small_is_right = node.strategy == "broadcast_right"
        left, right = (
            (local_streamed, local_small) if small_is_right else (local_small, local_streamed)
        )
        if node.shufflable:
            keys = _join_keys(node)
            values, gathered = self._key_ranges([left, right], keys)
            splitters = choose_splitters(gathered, 2, ranges_only=True)
            if splitters is not None:
                parts = self._partition([left, right], keys, values, splitters)
                del left, right, local_small, local_streamed, values
                yield from self._join_exchanged(node, parts)
                return
            left_bytes, right_bytes = sides_bytes(gathered)
        else:
            left_bytes, right_bytes = self._total_sizes(left, right)
        if small_is_right != (right_bytes <= left_bytes):
            small_is_right = not small_is_right
        yield self._join_broadcasting(node, left, right, "right" if small_is_right else "left")

    def _join_on_real_sizes(self, node: Join) -> Iterator[pl.DataFrame]:
        """A planned shuffle join, decided again once both sides are materialized.

        Estimates cannot see through a filter on an aggregate: TPC-H Q18's 57 large orders
        were planned as a shuffle of all of lineitem. A side whose real total is within the
        broadcast limit is allgathered instead. Failing that, a side within the limit that
        may not be broadcast (the left of a semi join) allgathers its distinct keys, and the
        other side drops the rows no key matches before anything moves; what is left often
        fits (Q4: one quarter's orders against the late lineitems).
        """
        keys = _join_keys(node)
        spools = [self._spooled(node.left, keys[0]), self._spooled(node.right, keys[1])]
        local = [spool if spool.spooled else spool.frame() for spool in spools]
        # One allgather gives the sizes that decide, the key ranges a shuffle partitions by, and
        # whether a rank's side did not fit its memory (then every rank exchanges in passes).
        values, gathered = self._key_ranges(local, keys)
        if any_spooled(gathered):
            del local, values
            for sides in self._exchanged_in_passes(spools, keys):
                for left, right in in_passes(sides, keys, self.spill):
                    yield self.runner.run_template(node.template, [left, right])
            return
        left, right = local  # type: ignore[misc]
        del local, spools
        side = _side_to_broadcast(node, *sides_bytes(gathered))
        if side is None:
            filtered = self._filter_by_keys_of_small_side(node, left, right, sides_bytes(gathered))
            if filtered is not None:
                left, right = filtered
                values, gathered = self._key_ranges([left, right], keys)
                side = _side_to_broadcast(node, *sides_bytes(gathered))
        if side is not None:
            yield self._join_broadcasting(node, left, right, side)
            return
        splitters = choose_splitters(gathered, 2, ranges_only=False)
        parts = self._partition([left, right], keys, values, splitters)
        del left, right, values  # the parts hold the rows; the shuffle frees them as they go
        yield from self._join_exchanged(node, parts)

    def _join_broadcasting(
        self, node: Join, left: pl.DataFrame, right: pl.DataFrame, side: str
    ) -> pl.DataFrame:
        """Every rank's ``side`` ("left" or "right") gathered, joined with this rank's other."""
        if side == "right":
            right = concat_frames(allgather_frames(self.comm, self.tags(), right))
        else:
            left = concat_frames(allgather_frames(self.comm, self.tags(), left))
        return self.runner.run_template(node.template, [left, right])

    def _join_exchanged(
        self, node: Join, parts: list[list[pl.DataFrame]]
    ) -> Iterator[pl.DataFrame]:
        """Send each side's parts to their ranks, then join what arrived; ``parts`` is emptied.

        What arrived over the budget is joined in passes (:func:`engine.executor.grace.in_passes`).
        """
        sides = []
        while parts:
            sides.append(shuffle(self.comm, self.tags(), parts.pop(0), self.spill))
        for left, right in in_passes(sides, _join_keys(node), self.spill):
            yield self.runner.run_template(node.template, [left, right])

    def _partition_for_ranks(
        self, frames: Sequence[pl.DataFrame], keys: Sequence[Sequence[pl.Expr]]
    ) -> list[list[pl.DataFrame]]:
        """Each frame split for the ranks by its keys, all alike: by key range or by hash.

        By key range when the key is one integer-like column and some frame's ranks hold
        ranges in rank order (:func:`engine.executor.frames.range_splitters`: sorted data
        read in row ranges, whose rows then mostly stay); by hash otherwise.
        """
        values, gathered = self._key_ranges(frames, keys)
        splitters = choose_splitters(gathered, len(frames), ranges_only=False)
        return self._partition(frames, keys, values, splitters)

    def _key_ranges(
        self, frames: Sequence[pl.DataFrame | Spool], keys: Sequence[Sequence[pl.Expr]]
    ) -> tuple[list[pl.Series | None], list[list[RankBounds]]]:
        """Each frame's integer key (if it has one) and every rank's key ranges and bytes.

        One small allgather, always made: one rank's empty frame can type its key
        differently, and every rank must take the same turn after it. A spooled side (in
        pass files: it did not fit) has no values and says so (:func:`pack_spooled`).
        """
        values = [
            integer_key(frame, k) if isinstance(frame, pl.DataFrame) else None
            for frame, k in zip(frames, keys, strict=True)
        ]
        mine = b"".join(
            pack_bounds(v, frame.estimated_size())
            if isinstance(frame, pl.DataFrame)
            else pack_spooled(frame.nbytes)
            for v, frame in zip(values, frames, strict=True)
        )
        return values, [unpack_bounds(p) for p in self.comm.allgather(self.tags(), mine)]

    def _partition(
        self,
        frames: Sequence[pl.DataFrame],
        keys: Sequence[Sequence[pl.Expr]],
        values: Sequence[pl.Series | None],
        splitters: list[int] | None,
    ) -> list[list[pl.DataFrame]]:
        if splitters is None:
            return [
                hash_partition(frame, k, self.comm.nranks)
                for frame, k in zip(frames, keys, strict=True)
            ]
        return [
            range_partition(frame, v, splitters)  # type: ignore[arg-type]
            for frame, v in zip(frames, values, strict=True)
        ]

    def _total_sizes(self, left: pl.DataFrame, right: pl.DataFrame) -> tuple[int, int]:
        """Both sides' bytes summed over the ranks (the same numbers on every rank)."""
        mine = struct.pack("<2q", left.estimated_size(), right.estimated_size())
        sizes = [struct.unpack("<2q", p) for p in self.comm.allgather(self.tags(), mine)]
        return sum(s[0] for s in sizes), sum(s[1] for s in sizes)

    def _filter_by_keys_of_small_side(
        self, node: Join, left: pl.DataFrame, right: pl.DataFrame, sizes: tuple[int, int]
    ) -> tuple[pl.DataFrame, pl.DataFrame] | None:
        left_bytes, right_bytes = sizes
        limit = node.broadcast_limit
        if "right" in node.filterable and left_bytes <= limit and left_bytes < right_bytes:
            kept = self._rows_matching(right, node.right_keys, left, node.left_keys, node)
            return left, kept
        if "left" in node.filterable and right_bytes <= limit and right_bytes < left_bytes:
            kept = self._rows_matching(left, node.left_keys, right, node.right_keys, node)
            return kept, right
        return None

    def _rows_matching(
        self,
        frame: pl.DataFrame,
        keys: Sequence[str],
        other: pl.DataFrame,
        other_keys: Sequence[str],
        node: Join,
    ) -> pl.DataFrame:
        """``frame``'s rows whose keys some rank's ``other`` has.

        A null key is kept when some rank's ``other`` has one: a superset is safe whatever the
        join's ``nulls_equal``.
        """
        names = [f"__polars_hpc_key{i}" for i in range(len(keys))]
        wanted = other.select(
            e.alias(n) for e, n in zip(_key_exprs(other_keys, node.key_casts), names, strict=True)
        ).unique()
        wanted = concat_frames(allgather_frames(self.comm, self.tags(), wanted))
        matching = frame.lazy().join(
            wanted.lazy(),
            left_on=_key_exprs(keys, node.key_casts),
            right_on=names,
            how="semi",
            nulls_equal=True,
        )
        return self.runner.collect(matching)

    def _keyed_in_passes(
        self, node: PlanNode, keys: Sequence[str], template: str, numbered: bool
    ) -> pl.DataFrame:
        """``node``'s rows hash-shuffled on ``keys``, ``template`` run on what arrived, in passes.

        Each pass holds every row of its keys (:func:`engine.executor.grace.in_passes`), so a
        template that works per key (``unique`` on them, a window ``over`` them) gives the
        same rows; within a pass rows keep their order. ``numbered``: each row carries its
        global position (:data:`_SEQ`) through. A rank whose rows do not fit spools them, and
        then every rank (told by a one-byte allgather) exchanges pass by pass.
        """
        key_exprs = _key_exprs(keys)
        spool = Spool(self.spill, key_exprs)
        offset = self.comm.rank << _SEQ_RANK_SHIFT
        for part in self.stream(node):
            frame = self.materialize(part)
            if numbered:
                seq = pl.int_range(pl.len(), dtype=pl.Int64) + offset
                frame = frame.with_columns(seq.alias(_SEQ))
                offset += frame.height
            spool.add(frame)
            del frame
        flags = self.comm.allgather(self.tags(), b"\x01" if spool.spooled else b"\x00")
        if any(flag == b"\x01" for flag in map(bytes, flags)):
            rounds: Iterator[list[pl.DataFrame]] = (
                received for (received,) in self._exchanged_in_passes([spool], [key_exprs])
            )
        else:
            outgoing = hash_partition(spool.frame(), key_exprs, self.comm.nranks)
            del spool
            rounds = iter([shuffle(self.comm, self.tags(), outgoing, self.spill)])
            del outgoing
        results = [
            self.runner.run_template(template, [rows])
            for received in rounds
            for (rows,) in in_passes([received], [key_exprs], self.spill)
        ]
        return concat_frames(results)

    def _distinct(self, node: Distinct) -> Iterator[Part]:
        kept = self._keyed_in_passes(node.input, node.subset, node.template, node.maintain_order)
        if node.maintain_order:
            ordered = self._order_by_first_appearance(kept)
            yield kept.clear().drop(_SEQ) if ordered is None else ordered
        else:
            yield kept

    def _sort(self, node: Sort) -> Iterator[Part]:
        """Sample sort; this rank's range is sorted in range passes when over the budget.

        A rank whose input does not fit keeps it on disk (:class:`PartSpool`) with a sample
        of each part; then every rank (told by a small allgather) sends part by part, in as
        many rounds as the rank with most parts, and each sorts what it receives in range
        passes cut at the global sample inside its range.
        """
        by = [dsl.expr_from_json(b).alias(f"__s{i}") for i, b in enumerate(node.by)]
        order = {"descending": list(node.descending), "nulls_last": list(node.nulls_last)}
        spool, part_samples = PartSpool(self.spill), []
        for part in self.stream(node.input):
            frame = self.materialize(part)
            if self.spill.bounded:
                step = max(1, frame.height // _SAMPLES_PER_RANK)
                part_samples.append(frame.select(by).gather_every(step))
            spool.add(frame)
            del frame
        if self.comm.nranks == 1 and not spool.spooled:
            received = [spool.frame()]
            del spool
            yield from self._sorted(node, in_range_passes(received, by, order, self.spill))
            return
        mine = struct.pack("<?qq", spool.spooled, spool.nparts, spool.nbytes)
        infos = [struct.unpack("<?qq", p) for p in self.comm.allgather(self.tags(), mine)]
        if not any(spooled for spooled, _, _ in infos):
            received = self._sort_exchanged(spool.frame(), by, order)
            del spool
            yield from self._sorted(node, in_range_passes(received, by, order, self.spill))
            return
        # The per-part samples, not all keys: a rank that did not spool may hold up to half its
        # budget. A rank without a budget sampled nothing; splitters only balance the ranks.
        samples = concat_frames(
            allgather_frames(self.comm, self.tags(), concat_frames(part_samples))
        )
        samples = samples.sort(samples.columns, maintain_order=True, **order)
        nranks, rank = self.comm.nranks, self.comm.rank
        splitters = even_splitters(samples, nranks)
        my_range = samples[samples.height * rank // nranks : samples.height * (rank + 1) // nranks]
        total = sum(nbytes for _, _, nbytes in infos)
        passes = min(MAX_PASSES, -(-total // (nranks * pass_share(self.spill))))
        received = self._sort_rounds(spool, by, order, splitters, max(n for _, n, _ in infos))
        ranges = in_range_passes(received, by, order, self.spill, even_splitters(my_range, passes))
        yield from self._sorted(node, ranges)

    def _sorted(self, node: Sort, ranges: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        for rows in ranges:
            yield self.runner.run_template(node.template, [rows])

    def _sort_exchanged(
        self, local: pl.DataFrame, by: list[pl.Expr], order: dict[str, list[bool]]
    ) -> list[pl.DataFrame]:
        """Each rank's sorted sample allgathered, the rows range-partitioned by it, received."""
        keys = local.select(by)
        ordered = keys.sort(keys.columns, maintain_order=True, **order)
        step = max(1, ordered.height // _SAMPLES_PER_RANK)
        samples = concat_frames(allgather_frames(self.comm, self.tags(), ordered[::step]))
        samples = samples.sort(samples.columns, maintain_order=True, **order)
        splitters = even_splitters(samples, self.comm.nranks)
        dest = range_destinations(keys, splitters, **order)
        parts = local.with_columns(dest.alias("__dest")).partition_by(
            "__dest", as_dict=True, include_key=False, maintain_order=True
        )
        outgoing = [parts.get((r,), local.clear()) for r in range(self.comm.nranks)]
        del local, keys, ordered, parts, dest
        return shuffle(self.comm, self.tags(), outgoing, self.spill)

    def _sort_rounds(
        self,
        spool: PartSpool,
        by: list[pl.Expr],
        order: dict[str, list[bool]],
        splitters: pl.DataFrame,
        rounds: int,
    ) -> Iterator[pl.DataFrame]:
        """What every rank sends here, one of its parts per round, in the rows' global order.

        A rank out of parts sends empty frames. Rounds interleave the sources, so what arrives
        is kept per source (on disk past a share of the budget) and handed on source by
        source: a stable sort must see equal keys in their order.
        """
        share = pass_share(self.spill) // self.comm.nranks
        by_source = [PartSpool(self.spill, share) for _ in range(self.comm.nranks)]
        parts = spool.parts()
        try:
            for _ in range(rounds):
                frame = next(parts, None)
                if frame is None:
                    frame = pl.DataFrame(schema=spool.schema)
                dest = range_destinations(frame.select(by), splitters, **order)
                outgoing = split_by_destination(frame, dest, self.comm.nranks)
                del frame, dest
                received = shuffle(self.comm, self.tags(), outgoing, self.spill)
                del outgoing
                for source, frame in zip(by_source, received, strict=True):
                    source.add(frame)
                del received
            for source in by_source:
                yield from source.parts()
        finally:
            for each in (spool, *by_source):
                each.remove()

    def _top_k(self, node: TopK) -> Iterator[Part]:
        best: pl.DataFrame | None = None
        for part in self.stream(node.input):
            candidates = self.runner.run_template(node.local_template, [part])
            merged = candidates if best is None else concat_frames([best, candidates])
            best = self.runner.run_template(node.local_template, [merged])
        assert best is not None
        gathered = gather_to_root(self.comm, self.tags(), best)
        if self.comm.rank == ROOT:
            yield self.runner.run_template(node.template, [concat_frames(gathered)])
        else:
            yield best.clear()

    def _row_index(self, node: RowIndex) -> Iterator[Part]:
        frames = [self.materialize(part) for part in self.stream(node.input)]
        count = pl.DataFrame({"rows": [sum(f.height for f in frames)]})
        counts = concat_frames(allgather_frames(self.comm, self.tags(), count))["rows"]
        offset = node.offset + int(counts[: self.comm.rank].sum())
        for frame in frames:
            yield frame.with_row_index(node.name, offset=offset)
            offset += frame.height

    def _window(self, node: Window) -> Iterator[Part]:
        evaluated = self._keyed_in_passes(node.input, node.keys, node.template, numbered=True)
        home = (pl.col(_SEQ) // (1 << _SEQ_RANK_SHIFT)).cast(pl.UInt32)
        parts = evaluated.with_columns(home.alias("__home")).partition_by(
            "__home", as_dict=True, include_key=False, maintain_order=True
        )
        outgoing = [parts.get((r,), evaluated.clear()) for r in range(self.comm.nranks)]
        back = concat_frames(shuffle(self.comm, self.tags(), outgoing, self.spill))
        yield back.sort(_SEQ).drop(_SEQ)

    def _concat(self, node: Concat) -> Iterator[Part]:
        locals_ = [self._local(child) for child in node.inputs]
        yield self.runner.run_template(node.template, self._rebalance(locals_, node.how))

    def _rebalance(self, frames: list[pl.DataFrame], how: str) -> list[pl.DataFrame]:
        """Move rows so rank q holds the q-th contiguous range of the result, per input.

        Vertical: the inputs follow one another in one index space; horizontal: each input
        has its own, aligned on row number (a short input's missing rows are the trailing ones).
        """
        heights = pl.DataFrame({"rows": [frame.height for frame in frames]})
        table = [f["rows"].to_list() for f in allgather_frames(self.comm, self.tags(), heights)]
        totals = [sum(rank_rows[i] for rank_rows in table) for i in range(len(frames))]
        total = sum(totals) if how == "vertical" else max(totals, default=0)
        nranks = self.comm.nranks
        bounds = [total * q // nranks for q in range(nranks + 1)]
        received = []
        for i, frame in enumerate(frames):
            base = sum(totals[:i]) if how == "vertical" else 0
            start = base + sum(table[r][i] for r in range(self.comm.rank))
            outgoing = []
            for q in range(nranks):
                lo, hi = max(bounds[q], start), min(bounds[q + 1], start + frame.height)
                outgoing.append(frame.slice(lo - start, max(0, hi - lo)))
            received.append(concat_frames(shuffle(self.comm, self.tags(), outgoing, self.spill)))
        return received


def _literal_keys(node: Aggregate) -> bool:
    """Whether every group key is a value, not a column (``group_by(True)``: one group)."""
    return all(not dsl.references_columns(json.loads(key)) for key in node.keys)


def _in_memory(node: PlanNode) -> bool:
    """Whether ``node``'s partitions are frames already computed, not lazy scan fragments."""
    while isinstance(node, RowWise):
        node = node.input
    return not isinstance(node, ScanSource)


def _reads_of(plan: DistributedPlan) -> dict[int, int]:
    """How many times each node is read by a parent, by ``id`` (shared subplans: more than once)."""
    reads: dict[int, int] = {}
    for node in plan_stages(plan):
        for child in children_of(node):
            reads[id(child)] = reads.get(id(child), 0) + 1
    return reads


def _scans_reduced_whole(plan: DistributedPlan) -> set[int]:
    """Scans a rank reads as one partition: those a partial aggregation reduces (row-wise between).

    Such a chain (scan, filters and projections, partial aggregation) is one lazy polars query
    whose result is the partials: polars' streaming engine
    (:meth:`engine.executor.fragments.FragmentRunner.collect`) reads the rank's whole share in
    morsels with its memory bounded, and parallelises it across the worker's threads, where
    slices of ``target_partition_size`` would each pay a query's set-up and run narrower. Every
    other scan keeps the partition limits: its partitions are materialised downstream.
    """
    found: set[int] = set()
    for node in plan_stages(plan):
        if isinstance(node, Aggregate) and node.outputs is not None and not node.maintain_order:
            below = node.input
            while isinstance(below, RowWise):
                below = below.input
            if isinstance(below, ScanSource):
                found.add(id(below))
    return found


_STREAMS: Final[dict[type, Callable[[RankExecutor, PlanNode], Iterator[Part]]]] = {
    ScanSource: RankExecutor._scan,
    FrameSource: RankExecutor._frame,
    RowWise: RankExecutor._row_wise,
    Aggregate: RankExecutor._aggregate,
    Slice: RankExecutor._slice,
    SingleRank: RankExecutor._single_rank,
    WholeQuery: RankExecutor._whole_query,
    Join: RankExecutor._join,
    Distinct: RankExecutor._distinct,
    Sort: RankExecutor._sort,
    TopK: RankExecutor._top_k,
    RowIndex: RankExecutor._row_index,
    Window: RankExecutor._window,
    Concat: RankExecutor._concat,
}


def _join_keys(node: Join) -> list[list[pl.Expr]]:
    """A join's left and right keys, cast to the dtype both sides hash as."""
    return [_key_exprs(node.left_keys, node.key_casts), _key_exprs(node.right_keys, node.key_casts)]


def _key_exprs(keys: Sequence[str], casts: Sequence[pl.DataType | None] = ()) -> list[pl.Expr]:
    """The join or shuffle keys as expressions, cast to the dtype both sides hash as."""
    exprs = [dsl.expr_from_json(k) for k in keys]
    if casts:
        exprs = [e if c is None else e.cast(c) for e, c in zip(exprs, casts, strict=True)]
    return exprs


def _side_to_broadcast(node: Join, left_bytes: int, right_bytes: int) -> str | None:
    """The side a shuffle join allgathers instead, by the real totals.

    Only the smaller side, within the limit: every rank joins all of a broadcast side, so
    broadcasting the larger one (the orders of Q13's left join from customer) repeats most of
    the join's work on every rank and moves more bytes than hashing both sides would.
    """
    if "right" in node.broadcastable and right_bytes <= min(left_bytes, node.broadcast_limit):
        return "right"
    if "left" in node.broadcastable and left_bytes <= min(right_bytes, node.broadcast_limit):
        return "left"
    return None
