"""Client-side planner: polars' DSL tree in, :class:`engine.plan.nodes.DistributedPlan` out.

Pure: it reads the query and file metadata (row counts, sizes) but starts nothing, talks to no
cluster and knows no communicator. Anything it cannot distribute becomes a :class:`SingleRank`
node and a recorded :class:`Fallback`, so the answer is always polars' answer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from engine.plan import dsl, dsl_exprs, dsl_nodes
from engine.plan.estimates import (
    FILE_FORMATS,
    ScanSize,
    plain_parquet_rows,
    plan_bytes,
    scan_size,
)
from engine.plan.nodes import (
    Aggregate,
    AggregateOutput,
    Concat,
    Distinct,
    DistributedPlan,
    Fallback,
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
from engine.plan.pruning import prune_columns
from engine.plan.small_inputs import estimated_input_bytes

if TYPE_CHECKING:
    from polars.lazyframe.opt_flags import QueryOptFlags

__all__ = ["plan_for_ranks", "plan_lazyframe", "plan_on_one_rank", "plan_query"]

_ROW_WISE_MAP_FUNCTIONS: Final = frozenset({"Rename", "Explode", "Unnest", "FillNan", "Hint"})
"""Hint (``set_sorted``) only marks sortedness, which holds for every rank's contiguous share."""
_TEMP: Final = "__polars_hpc_p"
_MAX_SLICE_LEN: Final = 2**32 - 1
_POSITION: Final = "__polars_hpc_position"
"""Row index column below an ``index_of`` aggregation: each row's global position."""
WINDOW_SEQ: Final = "__polars_hpc_seq"
"""Column that carries each row's global position through a window's shuffle."""
_SELECTIVITY_SAMPLE_ROWS: Final = 65_536
"""Rows of a filtered scan the planner runs the filter on to estimate its output size."""
DEFAULT_BROADCAST_LIMIT: Final = 32 * 1024 * 1024


def plan_lazyframe(
    lf: pl.LazyFrame, *, broadcast_limit: int = DEFAULT_BROADCAST_LIMIT
) -> DistributedPlan:
    """Plan ``lf``; a query polars cannot serialize runs on the client (a recorded fallback).

    ``broadcast_limit``: a join side estimated below this many bytes is sent to every rank.
    """
    dsl.check_polars_version()
    try:
        tree, frames = dsl.serialize_plan_and_frames(lf)
    except Exception as error:  # polars raises several types for unserializable plans
        return _on_client(error)
    return plan_query(tree, broadcast_limit=broadcast_limit, in_memory=frames)


def _on_client(error: Exception) -> DistributedPlan:
    """The plan of a query polars cannot serialize: polars runs it on the client."""
    reason = f"polars cannot serialize this query ({type(error).__name__}: {error})"
    return DistributedPlan(None, None, (Fallback("query", reason, on_client=True),))


def plan_for_ranks(
    lf: pl.LazyFrame,
    nranks: int,
    *,
    broadcast_limit: int = DEFAULT_BROADCAST_LIMIT,
    optimizations: QueryOptFlags | None = None,
) -> DistributedPlan:
    """The plan an engine of ``nranks`` ranks runs (one rank: :func:`plan_on_one_rank`)."""
    if nranks == 1:
        return plan_on_one_rank(lf, optimizations)
    return plan_lazyframe(lf, broadcast_limit=broadcast_limit)


def plan_on_one_rank(
    lf: pl.LazyFrame, optimizations: QueryOptFlags | None = None
) -> DistributedPlan:
    """The plan of a one-rank engine: polars runs the whole query as one query on the rank.

    With one rank every exchange is a copy to itself, and cutting the query into stages only
    keeps polars from optimizing it whole (TPC-H SF1 on one rank: 1.63x polars' time in
    stages, 1.14x whole). The rank gets polars' own serialization of the query, so what it
    runs is the user's plan, in-memory frames included, not a rewrite of it.
    """
    try:
        query = lf.serialize()
        schema = lf.collect_schema()
    except Exception as error:  # polars raises several types for unserializable plans
        return _on_client(error)
    flags = () if optimizations is None else _flags_by_name(optimizations)
    root = WholeQuery(query, estimated_input_bytes(lf), schema, flags)
    return DistributedPlan(root, schema, ())


def _flags_by_name(optimizations: QueryOptFlags) -> tuple[tuple[str, bool], ...]:
    """Every boolean flag of ``optimizations``; ``pl.QueryOptFlags(**dict(...))`` rebuilds it.

    >>> dict(_flags_by_name(pl.QueryOptFlags(sort_collapse=False)))["sort_collapse"]
    False
    """
    names = (name for name in dir(optimizations) if not name.startswith("_"))
    return tuple(
        (name, value) for name in names if isinstance(value := getattr(optimizations, name), bool)
    )


def plan_query(
    tree: dsl.Node,
    *,
    broadcast_limit: int = DEFAULT_BROADCAST_LIMIT,
    in_memory: dsl.InMemoryFrames | None = None,
) -> DistributedPlan:
    """Plan a DSL tree and its frames (from :func:`engine.plan.dsl.serialize_plan_and_frames`)."""
    planner = _Planner(broadcast_limit, in_memory or dsl.InMemoryFrames())
    root = planner.plan(prune_columns(tree))
    schema = dsl.lazyframe_from_dsl(tree).collect_schema()
    return DistributedPlan(root, schema, tuple(planner.fallbacks), tuple(planner.frames))


@dataclass
class _Planner:
    broadcast_limit: int
    in_memory: dsl.InMemoryFrames
    fallbacks: list[Fallback] = field(default_factory=list)
    frames: list[pl.DataFrame] = field(default_factory=list)
    sizes: dict[int, tuple[PlanNode, float]] = field(default_factory=dict)
    """Byte estimates known better than by :func:`plan_bytes` (keyed by ``id``, node kept)."""
    scans: dict[int, tuple[ScanSource, ScanSize]] = field(default_factory=dict)
    planned: dict[str, PlanNode] = field(default_factory=dict)
    """Subtrees planned so far, by their DSL JSON: a query that uses one twice (polars' common
    subplans, TPC-H Q11's and Q15's) gets one node, which ranks compute once."""

    def plan(self, node: dsl.Node) -> PlanNode:
        if not dsl.node_inputs(node):  # a scan or frame: cheap to plan again, read lazily
            return self.plan_node(node)
        text = json.dumps(node)
        known = self.planned.get(text)
        if known is None:
            known = self.planned[text] = self.plan_node(node)
        return known

    def plan_node(self, node: dsl.Node) -> PlanNode:
        expanded = dsl_nodes.with_expanded_selectors(node)
        if expanded is None:
            return self.single_rank(node, "an expression combines two different selectors")
        node = expanded
        children = [dsl.node_kind(child) for child in dsl.node_inputs(node) or []]
        if "ExtContext" in children:
            return self.single_rank_subtree(node, "with_context")
        if "PythonScan" in children:  # polars pushes the node's filter into the Python source
            return self.single_rank_subtree(node, "a scan of a Python source")
        kind = dsl.node_kind(node)
        handler: Callable[[dsl.Node], PlanNode | None] | None = _HANDLERS.get(kind)
        planned = handler(self, node) if handler is not None else None
        return planned if planned is not None else self.single_rank(node, _why_not(node))

    def single_rank(
        self, node: dsl.Node, reason: str, planned: tuple[PlanNode, ...] | None = None
    ) -> SingleRank:
        name = _node_name(node)
        self.fallbacks.append(Fallback(name, reason))
        inputs = dsl.node_inputs(node)
        schema = dsl.lazyframe_from_dsl(node).collect_schema()
        if inputs is None:
            return SingleRank((), self.in_memory.to_json(node), name, reason, schema)
        markers = [dsl.leaf_marker(i) for i in range(len(inputs))]
        template = json.dumps(dsl.with_inputs(node, markers))
        if planned is None:
            planned = tuple(self.plan(child) for child in inputs)
        return SingleRank(planned, template, name, reason, schema)

    def single_rank_subtree(self, node: dsl.Node, operation: str) -> SingleRank:
        """``node`` and everything below it as one polars query on rank 0.

        For operations whose inputs polars must see together with the node itself: the
        columns of a ``with_context`` frame exist only for the node right above it.
        """
        reason = f"{operation} runs as one polars query on one rank"
        self.fallbacks.append(Fallback(operation, reason))
        schema = dsl.lazyframe_from_dsl(node).collect_schema()
        return SingleRank((), self.in_memory.to_json(node), operation, reason, schema)

    def scan(self, node: dsl.Node) -> PlanNode | None:
        file_format = dsl.scan_format(node)
        paths = dsl.scan_sources(node)
        if file_format not in FILE_FORMATS or not paths:
            return None
        total_rows = plain_parquet_rows(node)
        if total_rows is None:
            lf = dsl.lazyframe_from_dsl(node)
            total_rows = lf.select(pl.len()).collect(engine="in-memory").item()
        size = scan_size(file_format, paths)
        source = ScanSource(
            json.dumps(node),
            file_format,
            tuple(paths),
            total_rows,
            size.total_bytes / max(total_rows, 1),
        )
        self.scans[id(source)] = (source, size)
        return source

    def frame(self, node: dsl.Node) -> PlanNode:
        frame = self.in_memory.frame(node)
        self.frames.append(frame)
        rows = frame.height
        return FrameSource(len(self.frames) - 1, rows, frame.estimated_size() / max(rows, 1))

    def row_wise(self, node: dsl.Node) -> PlanNode | None:
        if dsl.node_kind(node) == "MapFunction" and dsl_nodes.row_index_parts(node) is not None:
            name, offset = dsl_nodes.row_index_parts(node) or ("", 0)
            (child,) = dsl.node_inputs(node) or []
            return RowIndex(self.plan(child), name, offset)
        if not _is_row_wise(node) or _makes_a_row_of_nothing(node):
            return self.window(node) or self.windows_by_key_set(node) or self.global_aggregate(node)
        (child,) = dsl.node_inputs(node) or []
        planned = self.plan(child)
        own = json.dumps(dsl.with_inputs(node, [dsl.leaf_marker()]))
        name = _node_name(node)
        if isinstance(planned, RowWise):
            template = dsl.fill_leaves(own, [planned.template])
            planned = RowWise(planned.input, template, (*planned.operations, name))
        elif isinstance(planned, Join):
            template = dsl.fill_leaves(own, [planned.template])
            return dataclasses.replace(planned, template=template, then=(*planned.then, name))
        else:
            planned = RowWise(planned, own, (name,))
        self.note_projection(planned, node)
        return planned

    def note_projection(self, planned: RowWise, node: dsl.Node) -> None:
        """Estimate fragments over a parquet scan by the bytes of the columns they output."""
        scan = self.scans.get(id(planned.input))
        if scan is None or scan[0] is not planned.input or not scan[1].column_bytes:
            return
        names = dsl.lazyframe_from_dsl(node).collect_schema().names()
        nbytes = scan[1].of_columns(names, scan[0].total_rows)
        if "Filter" in planned.operations:
            nbytes *= _sampled_selectivity(scan[0], planned)
        self.sizes[id(planned)] = (planned, min(nbytes, plan_bytes(planned)))

    def estimate(self, node: PlanNode) -> float:
        """Upper estimate of a plan's output bytes in memory (see :func:`plan_bytes`)."""
        known = self.sizes.get(id(node))
        if known is not None and known[0] is node:
            return known[1]
        if isinstance(node, ScanSource | FrameSource):
            return plan_bytes(node)
        if isinstance(node, Join):
            return self.estimate(node.left) + self.estimate(node.right)
        if isinstance(node, SingleRank | Concat):
            return sum(self.estimate(child) for child in node.inputs)
        return self.estimate(node.input)

    def window(self, node: dsl.Node) -> PlanNode | None:
        kind = dsl.node_kind(node)
        if kind not in ("Select", "HStack", "Filter"):
            return None
        exprs = (
            [dsl_nodes.filter_predicate(node)] if kind == "Filter" else dsl_nodes.select_exprs(node)
        )
        keys = dsl_exprs.window_partition_keys(exprs)
        if keys is None:
            return None
        (child,) = dsl.node_inputs(node) or []
        with_seq = dsl_nodes.keep_column(dsl.with_inputs(node, [dsl.leaf_marker()]), WINDOW_SEQ)
        return Window(self.plan(child), json.dumps(with_seq), keys, _node_name(node))

    def windows_by_key_set(self, node: dsl.Node) -> PlanNode | None:
        """``over()`` windows with different keys in one select/with_columns, one by one.

        Each key set gets its own stage (rows shuffled on those keys), computing its windows
        into temporary columns; a last row-wise select names them. Every expression still
        sees only the input's columns, as in one ``with_columns``.
        """
        kind = dsl.node_kind(node)
        if kind not in ("Select", "HStack"):
            return None
        exprs = dsl_nodes.select_exprs(node)
        key_sets = [dsl_exprs.window_key_set(e) for e in exprs]
        if None in key_sets or len({k for k in key_sets if k}) < 2:
            return None
        (child,) = dsl.node_inputs(node) or []
        child_lf = dsl.lazyframe_from_dsl(child)
        names = [child_lf.select(dsl.expr_from_json(json.dumps(e))).collect_schema() for e in exprs]
        if any(len(n) != 1 for n in names):
            return None
        temps = {i: f"{_TEMP}w{i}" for i, key in enumerate(key_sets) if key}
        stage, options = child, dsl.node_body(node)["options"]
        for key in dict.fromkeys(k for k in key_sets if k):
            aliased = [{"Alias": [e, temps[i]]} for i, e in enumerate(exprs) if key_sets[i] == key]
            stage = {"HStack": {"exprs": aliased, "input": stage, "options": options}}
        produced = {
            names[i].names()[0]: ({"Alias": [{"Column": temps[i]}, names[i].names()[0]]})
            if i in temps
            else e
            for i, e in enumerate(exprs)
        }
        outputs = dsl.lazyframe_from_dsl(node).collect_schema().names()
        final = [produced.get(name, {"Column": name}) for name in outputs]
        return self.plan(dsl_nodes.select_node(final, stage))

    def global_aggregate(self, node: dsl.Node) -> PlanNode | None:
        if dsl.node_kind(node) != "Select":
            return None
        exprs = dsl_nodes.select_exprs(node)
        position = None
        if dsl_exprs.uses_index_of(exprs):
            (child,) = dsl.node_inputs(node) or []
            position = _POSITION
            node = dsl.with_inputs(node, [dsl_nodes.row_index_node(child, position)])
        parts = [dsl_exprs.decompose_agg(e, f"{_TEMP}{i}", position) for i, e in enumerate(exprs)]
        if any(p is None for p in parts):
            return None
        return self.aggregate(
            node, keys=[], aggs=exprs, maintain_order=False, position_column=position
        )

    def group_by(self, node: dsl.Node) -> PlanNode | None:
        parts = dsl_nodes.group_by_parts(node)
        if parts is None:
            return None
        keys, aggs, maintain_order = parts
        if not all(dsl_exprs.is_elementwise(k) for k in keys):
            return None
        return self.aggregate(node, keys=keys, aggs=aggs, maintain_order=maintain_order)

    def aggregate(
        self,
        node: dsl.Node,
        *,
        keys: list[Any],
        aggs: list[Any],
        maintain_order: bool,
        position_column: str | None = None,
    ) -> PlanNode | None:
        (child,) = dsl.node_inputs(node) or []
        input_schema = dsl.lazyframe_from_dsl(child).collect_schema()
        output_schema = dsl.lazyframe_from_dsl(node).collect_schema()
        key_names = tuple(output_schema.names()[: len(output_schema) - len(aggs)])
        outputs = _decompose_all(aggs, output_schema, len(key_names), position_column)
        if keys and not any(dsl.references_columns(k) for k in keys):
            outputs = None  # one group of literal keys: aggregated once, on rank 0
        needed = _needed_columns([*keys, *aggs])
        if outputs is None and needed is None:
            return None
        if needed == () and input_schema:
            needed = (input_schema.names()[0],)  # rows must travel even if no column is read
        return Aggregate(
            input=self.plan(child),
            keys=tuple(json.dumps(k) for k in keys),
            key_names=key_names,
            aggs=tuple(json.dumps(a) for a in aggs),
            outputs=outputs,
            maintain_order=maintain_order,
            input_schema=input_schema,
            output_schema=output_schema,
            needed_columns=needed,
        )

    def slice(self, node: dsl.Node) -> PlanNode:
        pushed = dsl_nodes.slice_pushed_down(node)
        if pushed is not None:
            return self.plan(pushed)
        (child,) = dsl.node_inputs(node) or []
        offset, length = dsl_nodes.slice_bounds(node)
        # No frame has more rows than polars' index type holds: larger bounds overflow later.
        offset = max(-_MAX_SLICE_LEN, min(offset, _MAX_SLICE_LEN))
        length = min(length, _MAX_SLICE_LEN)
        schema = dsl.lazyframe_from_dsl(node).collect_schema()
        child = dsl_nodes.with_expanded_selectors(child) or child
        is_sort = dsl.node_kind(child) == "Sort" and dsl_nodes.sort_parts(child) is not None
        if is_sort and offset >= 0:
            (sorted_input,) = dsl.node_inputs(child) or []
            chain = dsl.with_inputs(node, [dsl.with_inputs(child, [dsl.leaf_marker()])])
            local = dsl_nodes.with_slice(chain, 0, min(offset + length, _MAX_SLICE_LEN))
            return TopK(self.plan(sorted_input), json.dumps(local), json.dumps(chain), schema)
        return Slice(self.plan(child), offset, length, schema)

    def sort(self, node: dsl.Node) -> PlanNode | None:
        parts = dsl_nodes.sort_parts(node)
        if parts is None:
            return None
        (child,) = dsl.node_inputs(node) or []
        template = json.dumps(dsl.with_inputs(node, [dsl.leaf_marker()]))
        return Sort(self.plan(child), template, parts.by, parts.descending, parts.nulls_last)

    def distinct(self, node: dsl.Node) -> PlanNode | None:
        subset, maintain_order = dsl_nodes.distinct_parts(node)
        (child,) = dsl.node_inputs(node) or []
        if subset is None:
            columns = dsl.lazyframe_from_dsl(child).collect_schema().names()
            node = dsl_nodes.with_distinct_subset(node, columns)
            subset, _ = dsl_nodes.distinct_parts(node)
        template = json.dumps(dsl.with_inputs(node, [dsl.leaf_marker()]))
        return Distinct(self.plan(child), template, subset, maintain_order)

    def concat(self, node: dsl.Node) -> PlanNode | None:
        horizontal = dsl.node_kind(node) == "HConcat"
        if horizontal and not dsl_nodes.hconcat_is_plain(node):
            return None
        inputs = dsl.node_inputs(node) or []
        markers = [dsl.leaf_marker(i) for i in range(len(inputs))]
        template = json.dumps(dsl.with_inputs(node, markers))
        planned = tuple(self.plan(child) for child in inputs)
        return Concat(planned, template, "horizontal" if horizontal else "vertical")

    def join(self, node: dsl.Node) -> PlanNode | None:
        parts = dsl_nodes.join_parts(node)
        if parts is None:
            return None
        left_node, right_node = dsl.node_inputs(node) or []
        left, right = self.plan(left_node), self.plan(right_node)
        strategy = _join_strategy(
            parts, self.estimate(left), self.estimate(right), self.broadcast_limit
        )
        if strategy is None:
            reason = "this join's order or validation needs one rank to see all rows"
            return self.single_rank(node, reason, (left, right))
        casts: tuple[pl.DataType | None, ...] = ()
        small = self.estimate(right if strategy == "broadcast_right" else left)
        adaptive = _runtime_alternatives(parts, strategy, small, self.broadcast_limit)
        if adaptive["shufflable"] and (strategy == "shuffle" or adaptive["reconsider_broadcast"]):
            casts = _key_casts(left_node, parts.left_keys, right_node, parts.right_keys)
        template = json.dumps(dsl.with_inputs(node, [dsl.leaf_marker(0), dsl.leaf_marker(1)]))
        return Join(
            left,
            right,
            template,
            parts.how,
            strategy,
            parts.left_keys,
            parts.right_keys,
            casts,
            **adaptive,
        )


_HANDLERS: Final[dict[str, Callable[[_Planner, dsl.Node], PlanNode | None]]] = {
    "Scan": _Planner.scan,
    "DataFrameScan": _Planner.frame,
    "Filter": _Planner.row_wise,
    "Select": _Planner.row_wise,
    "HStack": _Planner.row_wise,
    "MapFunction": _Planner.row_wise,
    "GroupBy": _Planner.group_by,
    "Slice": _Planner.slice,
    "Sort": _Planner.sort,
    "Distinct": _Planner.distinct,
    "Join": _Planner.join,
    "Union": _Planner.concat,
    "HConcat": _Planner.concat,
}

_BROADCAST_RIGHT_OK: Final = frozenset({"inner", "left", "semi", "anti", "cross"})
_BROADCAST_LEFT_OK: Final = frozenset({"inner", "right", "cross"})


def _broadcastable(parts: dsl_nodes.JoinParts) -> tuple[bool, bool]:
    """Whether the right and the left side may be broadcast (allgathered).

    A broadcast side must be one whose unmatched rows are not emitted (else every rank would
    emit them); join validation needs all rows of a key together, which only a shuffle gives;
    a join that keeps one side's order keeps that side partitioned and in place.
    """
    order = parts.maintain_order
    validated = parts.validation != "ManyToMany"
    right_ok = (
        parts.how in _BROADCAST_RIGHT_OK and order not in ("Right", "RightLeft") and not validated
    )
    left_ok = (
        parts.how in _BROADCAST_LEFT_OK and order not in ("Left", "LeftRight") and not validated
    )
    if parts.how == "cross":
        left_ok = left_ok and order == "None"
    return right_ok, left_ok


def _runtime_alternatives(
    parts: dsl_nodes.JoinParts, strategy: str, small_bytes: float, limit: int
) -> dict[str, Any]:
    """What a join may do instead once its ranks know the real sizes (``Join``).

    A side may be filtered by the other's keys when its unmatched rows are never emitted and
    no validation must see all of its keys. A broadcast checks the real sizes only when its
    small side (``small_bytes``, estimated) is large enough to pay for the check.
    """
    right_ok, left_ok = _broadcastable(parts)
    validated = parts.validation != "ManyToMany"
    filterable = () if validated else _FILTERABLE_SIDES.get(parts.how, ())
    return {
        "broadcastable": ("right",) * right_ok + ("left",) * left_ok,
        "filterable": filterable,
        "broadcast_limit": limit,
        "reconsider_broadcast": strategy != "shuffle" and small_bytes >= _RECONSIDER_BYTES,
        "shufflable": parts.how != "cross" and parts.maintain_order == "None",
    }


_FILTERABLE_SIDES: Final[dict[str, tuple[str, ...]]] = {
    "inner": ("right", "left"),
    "left": ("right",),
    "semi": ("right",),
    "anti": ("right",),
    "right": ("left",),
}


_TINY_SHARE_OF_LIMIT: Final = 32
_RECONSIDER_BYTES: Final = 1 << 20
"""A broadcast side estimated below this is sent as planned: checking the real sizes first
costs collectives that such a side cannot pay back (TPC-H Q2's joins with nation, region)."""


def _join_strategy(
    parts: dsl_nodes.JoinParts, left_bytes: float, right_bytes: float, limit: int
) -> str | None:
    """``broadcast_right``, ``broadcast_left``, ``shuffle``, or ``None`` (single rank).

    The smaller side is broadcast: every rank joins all of a broadcast side, so broadcasting
    the larger one repeats the join on every rank, and a shuffle join decides again on the
    real sizes (TPC-H Q4: the late lineitems are filtered by one quarter's order keys, 29 MiB
    broadcast against 1.7 MiB moved). Only a side within a 32nd of the limit that only it may
    broadcast is broadcast when larger: the other side stays in place and in order, and
    polars' left, semi and anti joins keep the left order (deprecated, yet asserted by its
    ``test_join_preserve_order_left``), which a shuffle loses.
    """
    order = parts.maintain_order
    right_ok, left_ok = _broadcastable(parts)
    tiny = limit / _TINY_SHARE_OF_LIMIT
    if right_ok and right_bytes <= limit and (right_bytes <= left_bytes or right_bytes <= tiny):
        return "broadcast_right"
    if left_ok and left_bytes <= limit and (left_bytes <= right_bytes or left_bytes <= tiny):
        return "broadcast_left"
    if parts.how != "cross" and order == "None":
        return "shuffle"
    if right_ok:
        return "broadcast_right"
    return "broadcast_left" if left_ok else None


def _key_casts(
    left: dsl.Node, left_keys: tuple[str, ...], right: dsl.Node, right_keys: tuple[str, ...]
) -> tuple[pl.DataType | None, ...]:
    """Per key, the dtype both sides hash as (``None``: same dtype, hash as is)."""

    def dtypes(side: dsl.Node, keys: tuple[str, ...]) -> list[pl.DataType]:
        exprs = [dsl.expr_from_json(k).alias(f"__k{i}") for i, k in enumerate(keys)]
        return list(dsl.lazyframe_from_dsl(side).select(exprs).collect_schema().values())

    casts: list[pl.DataType | None] = []
    for a, b in zip(dtypes(left, left_keys), dtypes(right, right_keys), strict=True):
        if a == b:
            casts.append(None)
        elif a.is_integer() and b.is_integer():
            casts.append(pl.Int64())
        elif a.is_numeric() and b.is_numeric():
            casts.append(pl.Float64())
        else:
            casts.append(pl.String())
    return tuple(casts)


def _is_row_wise(node: dsl.Node) -> bool:
    kind = dsl.node_kind(node)
    if kind == "Filter":
        return dsl_exprs.is_elementwise(dsl.node_body(node)["predicate"])
    if kind in ("Select", "HStack"):
        exprs = dsl_nodes.select_exprs(node)
        broadcasts_a_scalar = kind == "Select" and not dsl.references_columns(exprs)
        return not broadcasts_a_scalar and all(dsl_exprs.is_elementwise(e) for e in exprs)
    if kind == "MapFunction":
        return dsl_nodes.map_function_name(node) in _ROW_WISE_MAP_FUNCTIONS
    return False


def _sampled_selectivity(scan: ScanSource, planned: RowWise) -> float:
    """Share of a scan's rows a filtering fragment keeps, measured on the scan's first rows.

    Join strategies are chosen from these estimates: sized before its filter, TPC-H's
    ``part`` in Q17 (2M rows, 91 MiB at SF10, about 2 thousand after the filter) was too large
    to broadcast, and all of ``lineitem`` was shuffled twice (1.8 GiB; benchmarks/README.md).
    The first rows are not a random sample: data sorted by a filtered column skews it, which
    can only change the strategy, never the answer. A sample polars cannot run counts as 1.
    """
    sample_rows = min(scan.total_rows, _SELECTIVITY_SAMPLE_ROWS)
    if sample_rows == 0:
        return 1.0
    leaf = dsl.slice_leaf(scan.scan_json, 0, sample_rows)
    sample = dsl.lazyframe_from_dsl(dsl.fill_leaves(planned.template, [leaf]))
    try:
        kept = sample.select(pl.len()).collect(engine="in-memory").item()
    except pl.exceptions.PolarsError:
        return 1.0
    return max(kept, 1) / sample_rows


def _makes_a_row_of_nothing(node: dsl.Node) -> bool:
    """Whether ``node`` is a ``with_columns`` of literals over a frame of no columns.

    polars makes one row of it (``pl.LazyFrame().with_columns(x=1)``), and so would every rank.
    """
    if dsl.node_kind(node) != "HStack" or dsl.references_columns(dsl_nodes.select_exprs(node)):
        return False
    (child,) = dsl.node_inputs(node) or []
    return len(dsl.lazyframe_from_dsl(child).collect_schema()) == 0


def _decompose_all(
    aggs: list[Any], output_schema: pl.Schema, n_keys: int, position_column: str | None = None
) -> tuple[AggregateOutput, ...] | None:
    """Partial/final split of every aggregation, or ``None`` if any one does not decompose."""
    names = output_schema.names()[n_keys:]
    if len(names) != len(aggs):
        return None
    outputs = []
    for index, (agg, name) in enumerate(zip(aggs, names, strict=True)):
        parts = dsl_exprs.decompose_agg(agg, f"{_TEMP}{index}", position_column)
        if parts is None:
            return None
        if parts.has_mean and not output_schema[name].is_float():
            return None
        outputs.append(AggregateOutput(name, parts.final, parts.parts))
    return tuple(outputs)


def _needed_columns(exprs: list[Any]) -> tuple[str, ...] | None:
    """Columns the expressions read, or ``None`` when a selector makes that unknowable."""
    if any(isinstance(e, dict) and "Selector" in e for x in exprs for e in dsl.walk_exprs(x)):
        return None
    names: dict[str, None] = {}
    for expr in exprs:
        for name in dsl.expr_from_json(json.dumps(expr)).meta.root_names():
            names[name] = None
    return tuple(names)


def _node_name(node: dsl.Node) -> str:
    kind = dsl.node_kind(node)
    return f"{kind}({dsl_nodes.map_function_name(node)})" if kind == "MapFunction" else kind


_NODE_OPERATIONS: Final[dict[str, str]] = {
    "ExtContext": "with_context",
    "MergeSorted": "merge_sorted",
    "PythonScan": "a scan of a Python source",
    "Cache": "a cached sub-plan",
}


def _why_not(node: dsl.Node) -> str:
    """Why ``node`` runs on one rank, naming the user's operation (``cum_sum``, ``join_asof``)."""
    kind = dsl.node_kind(node)
    if kind in ("Select", "HStack", "Filter"):
        exprs = (
            [dsl_nodes.filter_predicate(node)] if kind == "Filter" else dsl_nodes.select_exprs(node)
        )
        operation = dsl_exprs.describe_whole_frame_operation(exprs)
        if operation is None and kind == "Select":
            return "a select of literals only (one row, not one per rank)"
        where = {"Select": "select", "HStack": "with_columns", "Filter": "filter"}[kind]
        return f"{operation} in {where} needs the whole frame, not one rank's rows"
    if kind == "GroupBy":
        return f"{_group_by_operation(node)} is not distributed yet"
    if kind == "Join":
        return f"{_join_operation(node)} is not distributed yet"
    if kind == "Scan":
        return "the scan reads no local files of a supported format"
    if kind == "MapFunction":
        return f"{dsl_exprs.snake_case(dsl_nodes.map_function_name(node))} is not distributed yet"
    return f"{_NODE_OPERATIONS.get(kind, dsl_exprs.snake_case(kind))} is not distributed yet"


def _group_by_operation(node: dsl.Node) -> str:
    body = dsl.node_body(node)
    options = body.get("options") or {}
    if body.get("apply") is not None:
        return "group_by().map_groups"
    if options.get("rolling") is not None:
        return "rolling (group_by over a rolling window)"
    if options.get("dynamic") is not None:
        return "group_by_dynamic"
    operation = dsl_exprs.describe_whole_frame_operation(body["keys"])
    return f"group_by with a {operation} key" if operation else "this group_by"


def _join_operation(node: dsl.Node) -> str:
    how, _ = dsl_nodes.join_how_and_suffix(node)
    condition = dsl.node_body(node)["condition"]
    if how == "asof":
        return "join_asof"
    if not isinstance(condition, dict) or "Equi" not in condition:
        return "join_where (a join on inequalities)"
    return f"a {how} join with a slice or non-elementwise keys"
