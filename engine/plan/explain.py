"""Render a :class:`engine.plan.nodes.DistributedPlan` as text: stages, exchanges, fallbacks."""

from __future__ import annotations

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
    Window,
)

__all__ = ["format_plan"]


def format_plan(plan: DistributedPlan, nranks: int | None = None) -> str:
    """The plan as an indented tree, root first, then the fallbacks.

    >>> from engine.plan.planner import plan_lazyframe
    >>> import polars as pl
    >>> print(format_plan(plan_lazyframe(pl.LazyFrame({"a": [1, 2]}).filter(pl.col("a") > 1))))
    distributed plan
      RowWise [Filter]
        FrameSource #0: 2 rows, split into row ranges
    fallbacks: none
    """
    header = "distributed plan" + (f" on {nranks} ranks" if nranks else "")
    lines = [header]
    if plan.root is None:
        lines.append("  whole query runs with polars on the client")
    else:
        _format_node(plan.root, 1, lines)
    if plan.fallbacks:
        lines.append("fallbacks:")
        lines.extend(f"  - {fallback.describe()}" for fallback in plan.fallbacks)
    else:
        lines.append("fallbacks: none")
    return "\n".join(lines)


def _format_node(node: PlanNode, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    children: tuple[PlanNode, ...] = ()
    if isinstance(node, ScanSource):
        lines.append(
            f"{pad}ScanSource {node.file_format} {list(node.paths)}: {node.total_rows} rows, "
            "split into contiguous row ranges"
        )
    elif isinstance(node, FrameSource):
        lines.append(
            f"{pad}FrameSource #{node.frame_index}: {node.total_rows} rows, split into row ranges"
        )
    elif isinstance(node, RowWise):
        lines.append(f"{pad}RowWise [{', '.join(node.operations)}]")
        children = (node.input,)
    elif isinstance(node, Aggregate):
        how = "partial+final" if node.outputs is not None else "raw rows, aggregate once"
        exchange = f"hash shuffle on {list(node.key_names)}" if node.keys else "gather to rank 0"
        order = ", maintain_order" if node.maintain_order else ""
        lines.append(f"{pad}Aggregate ({how}{order}) <- exchange: {exchange}")
        children = (node.input,)
    elif isinstance(node, Slice):
        lines.append(
            f"{pad}Slice offset={node.offset} len={node.length} "
            "<- exchange: local slice, gather to rank 0"
        )
        children = (node.input,)
    elif isinstance(node, Join):
        exchange = {
            "shuffle": "hash shuffle both sides on the keys",
            "broadcast_right": "allgather the right side",
            "broadcast_left": "allgather the left side",
        }[node.strategy]
        lines.append(f"{pad}Join {node.how} ({node.strategy}) <- exchange: {exchange}")
        children = (node.left, node.right)
    elif isinstance(node, Sort):
        lines.append(f"{pad}Sort <- exchange: sample splitters (allgather), range shuffle")
        children = (node.input,)
    elif isinstance(node, TopK):
        lines.append(f"{pad}TopK <- exchange: local top-k per rank, merge on rank 0")
        children = (node.input,)
    elif isinstance(node, Distinct):
        lines.append(f"{pad}Distinct <- exchange: hash shuffle on the subset")
        children = (node.input,)
    elif isinstance(node, RowIndex):
        lines.append(f"{pad}RowIndex {node.name!r} <- exchange: allgather row counts")
        children = (node.input,)
    elif isinstance(node, Window):
        lines.append(
            f"{pad}Window [{node.operation}] <- exchange: hash shuffle on the partition keys, "
            "then back to each row's rank"
        )
        children = (node.input,)
    elif isinstance(node, Concat):
        lines.append(
            f"{pad}Concat {node.how} <- exchange: allgather row counts, rebalance to row ranges"
        )
        children = node.inputs
    elif isinstance(node, SingleRank):
        lines.append(f"{pad}SingleRank {node.node_name} (FALLBACK) <- exchange: gather to rank 0")
        children = node.inputs
    for child in children:
        _format_node(child, depth + 1, lines)
