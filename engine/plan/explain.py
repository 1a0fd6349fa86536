"""Render a :class:`engine.plan.nodes.DistributedPlan`: text tree, Graphviz dot, stage numbers.

One table, :data:`STAGE_KINDS`, says for every node type how it reads (a label and the
exchange that ends it) and which nodes feed it. The text tree, the dot graph and the
per-stage statistics (:mod:`engine.stats`) all number stages with :func:`plan_stages`, so
"stage 3" means the same node in ``engine.explain(lf, format="dot")`` and in
``engine.last_query_stats``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

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

__all__ = ["STAGE_KINDS", "StageKind", "describe_stage", "format_dot", "format_plan", "plan_stages"]


@dataclass(frozen=True)
class StageKind:
    """How one node type is shown: its label, the exchange that ends it, what feeds it."""

    label: Callable[[Any], str]
    exchange: Callable[[Any], str | None]
    children: Callable[[Any], tuple[PlanNode, ...]]


def _no_children(node: Any) -> tuple[PlanNode, ...]:
    return ()


def _input(node: Any) -> tuple[PlanNode, ...]:
    return (node.input,)


def _inputs(node: Any) -> tuple[PlanNode, ...]:
    return tuple(node.inputs)


def _no_exchange(node: Any) -> None:
    return None


def _fixed(text: str) -> Callable[[Any], str]:
    return lambda node: text


def _gib(nbytes: float) -> str:
    """Bytes as GiB with two decimals (an input whose size cannot be told is infinite).

    >>> _gib(3 * 2**29), _gib(float("inf"))
    ('1.50 GiB', 'unknown size')
    """
    return f"{nbytes / 2**30:.2f} GiB" if nbytes < float("inf") else "unknown size"


def _aggregate_label(node: Aggregate) -> str:
    how = "partial+final" if node.outputs is not None else "raw rows, aggregate once"
    order = ", maintain_order" if node.maintain_order else ""
    return f"Aggregate ({how}{order})"


def _aggregate_exchange(node: Aggregate) -> str:
    return f"hash shuffle on {list(node.key_names)}" if node.keys else "gather to rank 0"


_JOIN_EXCHANGES: Final = {
    "shuffle": "hash shuffle both sides on the keys",
    "broadcast_right": "allgather the right side",
    "broadcast_left": "allgather the left side",
}

STAGE_KINDS: Final[dict[type, StageKind]] = {
    ScanSource: StageKind(
        lambda n: (
            f"ScanSource {n.file_format} {list(n.paths)}: {n.total_rows} rows, "
            "split into contiguous row ranges"
        ),
        _no_exchange,
        _no_children,
    ),
    FrameSource: StageKind(
        lambda n: f"FrameSource #{n.frame_index}: {n.total_rows} rows, split into row ranges",
        _no_exchange,
        _no_children,
    ),
    RowWise: StageKind(lambda n: f"RowWise [{', '.join(n.operations)}]", _no_exchange, _input),
    Aggregate: StageKind(_aggregate_label, _aggregate_exchange, _input),
    Slice: StageKind(
        lambda n: f"Slice offset={n.offset} len={n.length}",
        _fixed("local slice, gather to rank 0"),
        _input,
    ),
    Join: StageKind(
        lambda n: f"Join {n.how} ({n.strategy})" + (f" then {', '.join(n.then)}" if n.then else ""),
        lambda n: _JOIN_EXCHANGES[n.strategy],
        lambda n: (n.left, n.right),
    ),
    Sort: StageKind(_fixed("Sort"), _fixed("sample splitters (allgather), range shuffle"), _input),
    TopK: StageKind(_fixed("TopK"), _fixed("local top-k per rank, merge on rank 0"), _input),
    Distinct: StageKind(_fixed("Distinct"), _fixed("hash shuffle on the subset"), _input),
    RowIndex: StageKind(lambda n: f"RowIndex {n.name!r}", _fixed("allgather row counts"), _input),
    Window: StageKind(
        lambda n: f"Window [{n.operation}]",
        _fixed("hash shuffle on the partition keys, then back to each row's rank"),
        _input,
    ),
    Concat: StageKind(
        lambda n: f"Concat {n.how}",
        _fixed("allgather row counts, rebalance to row ranges"),
        _inputs,
    ),
    WholeQuery: StageKind(
        lambda n: (
            f"WholeQuery: one polars query on the only rank ({_gib(n.input_bytes)} of "
            "input; over a quarter of the worker's memory, it runs in stages and passes)"
        ),
        lambda n: None,
        lambda n: (),
    ),
    SingleRank: StageKind(
        lambda n: f"SingleRank {n.node_name} (FALLBACK)", _fixed("gather to rank 0"), _inputs
    ),
}
"""Node type -> how it reads and what feeds it; a new node type adds one row here."""


def describe_stage(node: PlanNode) -> tuple[str, str | None]:
    """``(label, exchange)`` of one node; ``exchange`` is ``None`` for streaming stages.

    >>> from engine.plan.nodes import FrameSource, RowWise
    >>> describe_stage(RowWise(FrameSource(0, 2, 8.0), "{}", ("Filter",)))
    ('RowWise [Filter]', None)
    """
    kind = STAGE_KINDS[type(node)]
    return kind.label(node), kind.exchange(node)


def children_of(node: PlanNode) -> tuple[PlanNode, ...]:
    """The nodes that feed ``node``, in the order it reads them."""
    return STAGE_KINDS[type(node)].children(node)


def plan_stages(plan: DistributedPlan) -> list[PlanNode]:
    """Every node of the plan, root first (pre-order); a node's index is its stage number.

    Nodes are told apart by identity (two equal scans of one file are two stages); the same
    object reached twice is one stage. Ranks receive the plan pickled, which keeps identity.
    """
    seen: set[int] = set()
    order: list[PlanNode] = []
    pending = [] if plan.root is None else [plan.root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        pending.extend(reversed(children_of(node)))
    return order


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
    label, exchange = describe_stage(node)
    lines.append("  " * depth + label + (f" <- exchange: {exchange}" if exchange else ""))
    for child in children_of(node):
        _format_node(child, depth + 1, lines)


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def format_dot(plan: DistributedPlan, nranks: int | None = None) -> str:
    """The stage graph in Graphviz dot: one box per stage, arrows in the direction data flows.

    Exchanges are a box's second line; fallback stages are filled red. Render it with
    ``dot -Tpng plan.dot -o plan.png`` or ``engine.explain(lf, format="png", path=...)``.

    >>> from engine.plan.planner import plan_lazyframe
    >>> import polars as pl
    >>> print(format_dot(plan_lazyframe(pl.LazyFrame({"a": [1]}).filter(pl.col("a") > 0))))
    digraph plan {
      rankdir=BT;
      node [shape=box, fontname="Helvetica"];
      s0 [label="stage 0: RowWise [Filter]"];
      s1 [label="stage 1: FrameSource #0: 1 rows, split into row ranges"];
      s1 -> s0;
    }
    """
    lines = ["digraph plan {", "  rankdir=BT;", '  node [shape=box, fontname="Helvetica"];']
    if nranks:
        lines.append(f"  label={_dot_quote(f'distributed plan on {nranks} ranks')};")
    stages = plan_stages(plan)
    number = {id(node): index for index, node in enumerate(stages)}
    for index, node in enumerate(stages):
        label, exchange = describe_stage(node)
        text = f"stage {index}: {label}" + (f"\nexchange: {exchange}" if exchange else "")
        style = ', style=filled, fillcolor="#f4cccc"' if isinstance(node, SingleRank) else ""
        lines.append(f"  s{index} [label={_dot_quote(text)}{style}];")
    for index, node in enumerate(stages):
        lines.extend(f"  s{number[id(child)]} -> s{index};" for child in children_of(node))
    if plan.root is None:
        lines.append('  client [label="whole query runs with polars on the client"];')
    lines.append("}")
    return "\n".join(lines)
