"""Column pruning across stage boundaries: a DSL-to-DSL rewrite before planning.

Polars prunes columns inside each fragment it runs, but a fragment boundary (a shuffle, a
broadcast) would otherwise carry every column its producer has. This pass walks the query top
down with the set of columns each node's consumers read, and wraps scans, join and group-by
outputs, and filters on columns that nothing above them reads, in a ``select`` of just those
columns, so only they are read and cross the network. Unknown nodes and selectors keep
everything (never a wrong answer, only less pruning).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from engine.plan import dsl, dsl_nodes

__all__ = ["prune_columns"]

_WRAP_OUTPUT_OF: Final = frozenset({"Scan", "DataFrameScan", "Join", "GroupBy"})

Needed = set[str] | None
"""Columns a node's consumers read; ``None`` for all of them."""


def prune_columns(tree: dsl.Node) -> dsl.Node:
    """``tree`` with projections inserted where consumers read fewer columns than produced."""
    return _prune(tree, None)


def _schema_names(node: dsl.Node) -> list[str]:
    return dsl.lazyframe_from_dsl(node).collect_schema().names()


def _prune(node: dsl.Node, needed: Needed) -> dsl.Node:
    inputs = dsl.node_inputs(node)
    kind = dsl.node_kind(node)
    if inputs:
        rule = _RULES.get(kind)
        child_needs = rule(node, needed) if rule is not None else [None] * len(inputs)
        node = dsl.with_inputs(
            node, [_prune(c, n) for c, n in zip(inputs, child_needs, strict=True)]
        )
    if needed is None or not (kind in _WRAP_OUTPUT_OF or _filter_reads_more(node, needed)):
        return node
    names = _schema_names(node)
    keep = [name for name in names if name in needed] or names[:1]
    return node if len(keep) == len(names) else dsl_nodes.select_columns_node(node, keep)


def _filter_reads_more(node: dsl.Node, needed: set[str]) -> bool:
    """A filter on a column its consumers do not read (Q13's ``o_comment``).

    Its output would carry that column across the next exchange: polars drops a column after
    the last node reading it only at the end of a query, or at a join.
    """
    if dsl.node_kind(node) != "Filter":
        return False
    roots = dsl_nodes.expr_roots([dsl_nodes.filter_predicate(node)])
    return roots is not None and not roots <= needed


def _union(needed: Needed, more: set[str] | None) -> Needed:
    return None if needed is None or more is None else needed | more


def _select(node: dsl.Node, needed: Needed) -> list[Needed]:
    return [dsl_nodes.expr_roots(dsl_nodes.select_exprs(node))]


def _hstack(node: dsl.Node, needed: Needed) -> list[Needed]:
    return [_union(needed, dsl_nodes.expr_roots(dsl_nodes.select_exprs(node)))]


def _filter(node: dsl.Node, needed: Needed) -> list[Needed]:
    return [_union(needed, dsl_nodes.expr_roots([dsl_nodes.filter_predicate(node)]))]


def _group_by(node: dsl.Node, needed: Needed) -> list[Needed]:
    parts = dsl_nodes.group_by_parts(node)
    if parts is None:
        return [None]
    keys, aggs, _ = parts
    return [dsl_nodes.expr_roots([*keys, *aggs])]


def _sort(node: dsl.Node, needed: Needed) -> list[Needed]:
    return [_union(needed, dsl_nodes.expr_roots(dsl_nodes.sort_keys(node)))]


def _slice(node: dsl.Node, needed: Needed) -> list[Needed]:
    return [needed]


def _distinct(node: dsl.Node, needed: Needed) -> list[Needed]:
    subset = dsl_nodes.distinct_subset(node)
    return [None if subset is None else _union(needed, dsl_nodes.expr_roots(subset))]


def _map_function(node: dsl.Node, needed: Needed) -> list[Needed]:
    if needed is None:
        return [None]
    row_index = dsl_nodes.row_index_parts(node)
    if row_index is not None:
        return [needed - {row_index[0]}]
    mapping = dsl_nodes.rename_mapping(node)
    if mapping is not None:
        return [{mapping.get(name, name) for name in needed} | set(mapping.values())]
    return [None]


def _join(node: dsl.Node, needed: Needed) -> list[Needed]:
    keys = dsl_nodes.join_key_exprs(node)
    if needed is None or keys is None:
        return [None, None]
    how, suffix = dsl_nodes.join_how_and_suffix(node)
    left_node, right_node = dsl.node_inputs(node) or []
    left_names = set(_schema_names(left_node))
    right_names = _schema_names(right_node)
    left_keys, right_keys = dsl_nodes.expr_roots(keys[0]), dsl_nodes.expr_roots(keys[1])
    suffixed = {n for n in right_names if f"{n}{suffix}" in needed and n in left_names}
    left = _union((needed & left_names) | suffixed, left_keys)
    if how in ("semi", "anti"):
        return [left, right_keys]
    wanted = {n for n in right_names if n in needed or f"{n}{suffix}" in needed}
    # ``suffixed``: a right column read as ``c_right`` is named so only while the left side
    # still has its ``c``; pruning that away would rename the right one to ``c``.
    return [left, _union(wanted, right_keys)]


_RULES: Final[dict[str, Callable[[dsl.Node, Needed], list[Needed]]]] = {
    "Select": _select,
    "HStack": _hstack,
    "Filter": _filter,
    "GroupBy": _group_by,
    "Sort": _sort,
    "Slice": _slice,
    "Distinct": _distinct,
    "MapFunction": _map_function,
    "Join": _join,
}
