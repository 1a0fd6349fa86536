"""The distributed plan: plain, picklable, printable data that every rank runs the same way.

A plan is a tree of stages. Sources and row-wise fragments stream partitions; ``Aggregate``,
``Slice`` and ``SingleRank`` end a stage with an exchange (hash shuffle, gather to rank 0).
Polars expressions and plan fragments stay opaque JSON text (see :mod:`engine.plan.dsl`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from engine.plan.dsl_exprs import AggPart

__all__ = [
    "Aggregate",
    "AggregateOutput",
    "Concat",
    "Distinct",
    "DistributedPlan",
    "Fallback",
    "FrameSource",
    "Join",
    "PlanNode",
    "RowIndex",
    "RowWise",
    "ScanSource",
    "SingleRank",
    "Slice",
    "Sort",
    "TopK",
    "WholeQuery",
    "Window",
]


@dataclass(frozen=True)
class ScanSource:
    """A file scan (parquet/csv/ipc/ndjson); rank r reads the r-th contiguous slice of its rows.

    ``scan_json`` is polars' own scan node, so globs, hive partitions, ``n_rows``, ``row_index``
    and ``include_file_paths`` keep polars' meaning; each partition reads
    ``Slice(scan, offset, len)``, which polars pushes down to files and row groups.
    """

    scan_json: str = field(repr=False)
    file_format: str
    paths: tuple[str, ...]
    total_rows: int
    bytes_per_row: float


@dataclass(frozen=True)
class FrameSource:
    """An in-memory frame of the query; rank r gets the r-th contiguous row range."""

    frame_index: int
    total_rows: int
    bytes_per_row: float


@dataclass(frozen=True)
class RowWise:
    """Row-wise polars nodes applied to each partition of ``input`` (no exchange).

    ``template`` is the DSL JSON of the chain with a leaf marker where the partition goes.
    """

    input: PlanNode
    template: str = field(repr=False)
    operations: tuple[str, ...]


@dataclass(frozen=True)
class AggregateOutput:
    """One output column of a decomposed aggregation: its partials and how they finish.

    ``final`` is expression JSON over the combined partial columns.
    """

    name: str
    final: str = field(repr=False)
    parts: tuple[AggPart, ...] = field(repr=False)


@dataclass(frozen=True)
class Aggregate:
    """``group_by(keys).agg(aggs)``; with no keys a global aggregation (``select(sum)``).

    ``outputs`` set: partial aggregation per partition, hash shuffle of the partials on the
    keys, final aggregation per rank. ``outputs`` None: shuffle the raw rows (only
    ``needed_columns``) on the keys and aggregate once, which is right for every expression.
    """

    input: PlanNode
    keys: tuple[str, ...] = field(repr=False)
    key_names: tuple[str, ...]
    aggs: tuple[str, ...] = field(repr=False)
    outputs: tuple[AggregateOutput, ...] | None
    maintain_order: bool
    input_schema: pl.Schema = field(repr=False)
    output_schema: pl.Schema = field(repr=False)
    needed_columns: tuple[str, ...] | None


@dataclass(frozen=True)
class Slice:
    """``slice(offset, length)``: a local head/tail per rank, then the exact slice on rank 0."""

    input: PlanNode
    offset: int
    length: int | None
    output_schema: pl.Schema = field(repr=False)


@dataclass(frozen=True)
class SingleRank:
    """A node the planner does not distribute: its inputs are gathered to rank 0, which runs it.

    ``template`` is the node's DSL JSON with one leaf marker per input (a node with no known
    inputs is shipped whole and read by rank 0).
    """

    inputs: tuple[PlanNode, ...]
    template: str = field(repr=False)
    node_name: str
    reason: str
    output_schema: pl.Schema = field(repr=False)


@dataclass(frozen=True)
class WholeQuery:
    """The whole query as one polars query: the plan of a one-rank engine.

    With one rank every exchange is a copy to itself; cutting the query into stages only keeps
    polars from optimizing it whole. ``query`` is polars' own binary serialization of the
    LazyFrame, in-memory frames included, so the rank runs exactly the user's plan.
    ``input_bytes`` (files' and frames' estimates) decides the polars engine on the rank.
    """

    query: bytes = field(repr=False)
    input_bytes: float
    output_schema: pl.Schema = field(repr=False)
    optimizations: tuple[tuple[str, bool], ...] = ()
    """The user's ``QueryOptFlags`` by name (they do not pickle); ``()``: polars' defaults."""


@dataclass(frozen=True)
class Join:
    """An equi-join (or cross join), run by polars per rank from ``template``.

    ``strategy``: ``broadcast_right`` (allgather the right side, stream the left),
    ``broadcast_left``, or ``shuffle`` (hash both sides on the keys). ``then``: the row-wise
    operations above the join that run in the same polars query (``template`` holds them),
    so polars optimizes them with the join as it would in one process.

    Strategies are planned from estimates; the ranks correct them where they see the real
    sizes. ``broadcastable`` names the sides (``"left"``, ``"right"``) the join may allgather:
    a ``shuffle`` does so instead when a side's real total is at most ``broadcast_limit``
    bytes; a broadcast whose streamed side is in memory broadcasts the smaller side, or
    range-partitions both when they hold ranges of sorted keys.
    ``filterable`` names the sides that may drop rows whose keys the other side lacks (such
    rows are never emitted) before a shuffle moves them.
    """

    left: PlanNode
    right: PlanNode
    template: str = field(repr=False)
    how: str
    strategy: str
    left_keys: tuple[str, ...] = field(repr=False)
    right_keys: tuple[str, ...] = field(repr=False)
    key_casts: tuple[pl.DataType | None, ...] = field(repr=False)
    then: tuple[str, ...] = ()
    broadcastable: tuple[str, ...] = ()
    filterable: tuple[str, ...] = ()
    broadcast_limit: int = 0
    reconsider_broadcast: bool = False
    """A broadcast whose small side is estimated large enough to be worth checking."""
    shufflable: bool = False
    """Whether hashing (or range-partitioning) both sides on the keys gives the join's answer
    (``key_casts`` then says how the keys hash alike)."""


@dataclass(frozen=True)
class Sort:
    """Sample sort: allgather samples, agree on splitters, range-partition, sort locally."""

    input: PlanNode
    template: str = field(repr=False)
    by: tuple[str, ...] = field(repr=False)
    descending: tuple[bool, ...]
    nulls_last: tuple[bool, ...]


@dataclass(frozen=True)
class TopK:
    """``sort(...).slice(offset, n)`` (``top_k``): local top ``offset+n`` per rank, then merge."""

    input: PlanNode
    local_template: str = field(repr=False)
    template: str = field(repr=False)
    output_schema: pl.Schema = field(repr=False)


@dataclass(frozen=True)
class Distinct:
    """``unique``: hash shuffle on the subset, unique per rank.

    With ``maintain_order`` each row carries its global position, and rank 0 puts the kept rows
    back in input order.
    """

    input: PlanNode
    template: str = field(repr=False)
    subset: tuple[str, ...] = field(repr=False)
    maintain_order: bool


@dataclass(frozen=True)
class RowIndex:
    """``with_row_index``: global offsets from an exclusive scan of the ranks' row counts."""

    input: PlanNode
    name: str
    offset: int


@dataclass(frozen=True)
class Window:
    """A select/with_columns/filter with ``over(keys)`` windows, in polars' row order.

    Rows are shuffled on the keys (each rank then holds whole groups), the node runs per rank,
    and rows go back to their rank and original order; ``template`` keeps the sequence column.
    """

    input: PlanNode
    template: str = field(repr=False)
    keys: tuple[str, ...] = field(repr=False)
    operation: str


@dataclass(frozen=True)
class Concat:
    """``concat`` (vertical/diagonal: ``how="vertical"``) or ``hconcat`` (``how="horizontal"``).

    Rows are rebalanced so rank r holds the r-th contiguous range of the result (row counts
    allgathered, slices exchanged), then polars' own node runs per rank on its pieces.
    """

    inputs: tuple[PlanNode, ...]
    template: str = field(repr=False)
    how: str


PlanNode = (
    ScanSource
    | FrameSource
    | RowWise
    | Aggregate
    | Slice
    | SingleRank
    | WholeQuery
    | Join
    | Sort
    | TopK
    | Distinct
    | RowIndex
    | Window
    | Concat
)


@dataclass(frozen=True)
class Fallback:
    """A part of the query that does not run distributed, and why."""

    node: str
    reason: str
    on_client: bool = False

    def describe(self) -> str:
        """One line for warnings and errors."""
        where = "with polars on the client" if self.on_client else "on a single rank"
        return f"{self.node} runs {where}: {self.reason}"


@dataclass(frozen=True)
class DistributedPlan:
    """What the planner hands the executor: the stage tree, in-memory inputs, fallbacks.

    ``root`` is ``None`` when the whole query runs with polars on the client (a query polars
    cannot serialize); ``frames`` are the in-memory frames :class:`FrameSource` nodes index.
    """

    root: PlanNode | None
    output_schema: pl.Schema | None = field(repr=False)
    fallbacks: tuple[Fallback, ...]
    frames: tuple[pl.DataFrame, ...] = field(default=(), repr=False)
