"""The planner's reading of plan nodes in polars' DSL JSON: their parts, and the nodes it adds.

``planner.py`` and ``pruning.py`` ask a node for its parts (:func:`group_by_parts`,
:func:`join_parts`, :func:`sort_parts`, ...) rather than walk its JSON, build the few nodes
they add (:func:`select_node`, :func:`row_index_node`), and expand selectors (``pl.all()``,
``cs.numeric()``) into one expression per column before expressions get temporary names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from engine.plan.dsl import (
    Node,
    expr_from_json,
    lazyframe_from_dsl,
    node_body,
    node_inputs,
    node_kind,
    references_columns,
    walk_exprs,
    with_inputs,
)
from engine.plan.dsl_exprs import is_elementwise

__all__ = [
    "JoinParts",
    "SortParts",
    "distinct_parts",
    "distinct_subset",
    "expand_selectors",
    "expr_roots",
    "filter_predicate",
    "group_by_parts",
    "hconcat_is_plain",
    "join_how_and_suffix",
    "join_key_exprs",
    "join_parts",
    "keep_column",
    "map_function_name",
    "rename_mapping",
    "row_index_node",
    "row_index_parts",
    "select_columns_node",
    "select_exprs",
    "select_node",
    "slice_bounds",
    "slice_pushed_down",
    "sort_keys",
    "sort_parts",
    "with_distinct_subset",
    "with_expanded_selectors",
    "with_slice",
]


def expand_selectors(exprs: list[Any], schema: pl.Schema) -> list[Any] | None:
    """Each expression with a selector as one expression per column it selects in ``schema``.

    Selectors are ``pl.all()``, ``pl.col("a", "b")``, ``cs.numeric()`` ... The planner gives
    each expression of an aggregation or sort key its own temporary column; an expression
    that expands to several columns would give them one name. ``None`` when an expression
    holds two different selectors (polars pairs their columns up; not done here).

    >>> expand_selectors([{"Agg": {"First": {"Selector": "Wildcard"}}}],
    ...                  pl.Schema({"a": pl.Int8, "b": pl.Int8}))
    [{'Agg': {'First': {'Column': 'a'}}}, {'Agg': {'First': {'Column': 'b'}}}]
    """
    expanded: list[Any] = []
    for expr in exprs:
        selectors = {json.dumps(e) for e in walk_exprs(expr) if _is_selector(e)}
        if not selectors:
            expanded.append(expr)
            continue
        frame = pl.LazyFrame(schema=schema)
        outputs = frame.select(expr_from_json(json.dumps(expr))).collect_schema().names()
        if len(selectors) > 1 and len(outputs) > 1:
            return None
        if len(selectors) > 1:
            expanded.append(expr)
            continue
        (selector,) = selectors
        columns = frame.select(expr_from_json(selector)).collect_schema().names()
        if len(outputs) == 1 and len(columns) != 1:  # one output of many (mean_horizontal)
            expanded.append(expr)
            continue
        one_each = [_replace_subtree(expr, json.loads(selector), {"Column": c}) for c in columns]
        names = [
            frame.select(expr_from_json(json.dumps(e))).collect_schema().names() for e in one_each
        ]
        if [n for ns in names for n in ns] != outputs:
            return None
        expanded.extend(one_each)
    return expanded


def _is_selector(expr: Any) -> bool:
    return isinstance(expr, dict) and len(expr) == 1 and "Selector" in expr


def _replace_subtree(tree: Any, old: Any, new: Any) -> Any:
    if tree == old:
        return new
    if isinstance(tree, dict):
        return {key: _replace_subtree(value, old, new) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_replace_subtree(value, old, new) for value in tree]
    return tree


def with_expanded_selectors(node: Node) -> Node | None:
    """``node`` (``GroupBy``, ``Select``, ``Sort``, ``Distinct``) with its selectors expanded.

    ``None`` when an expression cannot be expanded; the node itself when it has no selector.
    """
    kind = node_kind(node)
    if kind == "Distinct":
        return _distinct_with_expanded_subset(node)
    if kind == "GroupBy" and group_by_parts(node) is None:
        return node  # rolling/dynamic windows expand pl.all() without their index: not ours
    fields = {"GroupBy": ("keys", "aggs"), "Select": ("expr",), "Sort": ("by_column",)}
    if kind not in fields:
        return node
    body = dict(node_body(node))
    if not any(_is_selector(e) for name in fields[kind] for e in walk_exprs(body[name])):
        return node
    (child,) = node_inputs(node) or []
    schema = lazyframe_from_dsl(child).collect_schema()
    for name in fields[kind]:
        if name == "aggs":  # polars' group_by expands pl.all() in aggs without the keys
            keys = set(lazyframe_from_dsl(child).select(_exprs(body["keys"])).collect_schema())
            schema = pl.Schema({k: v for k, v in schema.items() if k not in keys})
        if kind == "Sort":
            counts = [len(expand_selectors([e], schema) or [e]) for e in body[name]]
            body["sort_options"] = _repeat_sort_flags(body["sort_options"], counts)
        expanded = expand_selectors(body[name], schema)
        if expanded is None:
            return None
        body[name] = expanded
    return {kind: body}


def _distinct_with_expanded_subset(node: Node) -> Node | None:
    """A ``unique(subset=selector)`` with the subset as the columns it selects.

    The executor adds a position column before running polars' ``unique``; a selector such as
    ``pl.exclude("z")`` would take it into the subset.
    """
    body = dict(node_body(node))
    subset = body["options"].get("subset")
    if not subset or not any(_is_selector(e) for e in walk_exprs(subset)):
        return node
    (child,) = node_inputs(node) or []
    expanded = expand_selectors(subset, lazyframe_from_dsl(child).collect_schema())
    if expanded is None:
        return None
    body["options"] = {**body["options"], "subset": expanded}
    return {"Distinct": body}


def _exprs(exprs: list[Any]) -> list[pl.Expr]:
    return [expr_from_json(json.dumps(e)) for e in exprs]


def _repeat_sort_flags(options: dict[str, Any], counts: list[int]) -> dict[str, Any]:
    """Per-key sort flags repeated for each column a key expanded to."""
    options = dict(options)
    for flag in ("descending", "nulls_last"):
        values = options[flag]
        if len(values) == len(counts) > 1:
            options[flag] = [v for v, n in zip(values, counts, strict=True) for _ in range(n)]
    return options


def row_index_node(node: Node, name: str) -> Node:
    """``node.with_row_index(name)`` as a DSL node."""
    return {"MapFunction": {"input": node, "function": {"RowIndex": {"name": name, "offset": 0}}}}


def group_by_parts(node: Node) -> tuple[list[Any], list[Any], bool] | None:
    """``(keys, aggs, maintain_order)`` of a plain ``GroupBy`` node, else ``None``.

    Rolling, dynamic, sliced and ``map_groups`` group-bys are not plain.
    """
    body = node_body(node)
    options = body.get("options") or {}
    if body.get("apply") is not None or body.get("predicates"):
        return None
    if any(options.get(k) is not None for k in ("dynamic", "rolling", "slice")):
        return None
    return body["keys"], body["aggs"], bool(body["maintain_order"])


def select_exprs(node: Node) -> list[Any]:
    """Expressions of a ``Select`` or ``HStack`` node."""
    body = node_body(node)
    return body["expr"] if "expr" in body else body["exprs"]


def map_function_name(node: Node) -> str:
    """Name of a ``MapFunction`` node's function, e.g. ``"Rename"``."""
    function = node_body(node)["function"]
    return function if isinstance(function, str) else next(iter(function))


def slice_bounds(node: Node) -> tuple[int, int]:
    """``(offset, length)`` of a ``Slice`` node."""
    body = node_body(node)
    return int(body["offset"]), int(body["len"])


@dataclass(frozen=True)
class JoinParts:
    """The parts of a ``Join`` node the planner reasons about."""

    how: str
    left_keys: tuple[str, ...]
    right_keys: tuple[str, ...]
    validation: str
    maintain_order: str


def join_parts(node: Node) -> JoinParts | None:
    """Parts of an equi-join (or cross join); ``None`` for asof, non-equi and sliced joins."""
    body = node_body(node)
    args = body["options"]["args"]
    condition = body["condition"]
    if not isinstance(args["how"], str) or args.get("slice") is not None:
        return None
    if not isinstance(condition, dict) or "Equi" not in condition:
        return None
    pairs = condition["Equi"]["on"]
    if not all(is_elementwise(left) and is_elementwise(right) for left, right in pairs):
        return None
    return JoinParts(
        how=args["how"].lower(),
        left_keys=tuple(json.dumps(left) for left, _ in pairs),
        right_keys=tuple(json.dumps(right) for _, right in pairs),
        validation=str(args.get("validation", "ManyToMany")),
        maintain_order=str(args.get("maintain_order", "None")),
    )


@dataclass(frozen=True)
class SortParts:
    """Sort keys and options of a ``Sort`` node."""

    by: tuple[str, ...]
    descending: tuple[bool, ...]
    nulls_last: tuple[bool, ...]


def sort_parts(node: Node) -> SortParts | None:
    """Keys of a plain ``Sort`` (no pre-applied slice or limit), else ``None``."""
    body = node_body(node)
    options = body["sort_options"]
    if body.get("slice") is not None or options.get("limit") is not None:
        return None
    by = body["by_column"]
    if not all(is_elementwise(e) for e in by):
        return None

    def per_key(values: list[bool]) -> tuple[bool, ...]:
        return tuple(values) if len(values) == len(by) else tuple(values[:1] * len(by))

    return SortParts(
        by=tuple(json.dumps(e) for e in by),
        descending=per_key(options["descending"]),
        nulls_last=per_key(options["nulls_last"]),
    )


def slice_pushed_down(node: Node) -> Node | None:
    """``Slice(f(x))`` as ``f(Slice(x))`` when ``f`` computes each row alone and may fail.

    polars pushes slices below such nodes, so a fallible expression (``list.get``, a strict
    cast) only ever sees the rows kept; evaluating it on a whole rank share first would raise
    where polars does not. Plain projections stay above the slice (they cannot fail, and
    fused with the scan they keep its column pruning). ``None``: leave the slice where it is.
    """
    (child,) = node_inputs(node) or [None]
    if child is None or node_kind(child) not in ("Select", "HStack"):
        return None
    exprs = select_exprs(child)
    if not exprs or not all(is_elementwise(e) for e in exprs):
        return None
    if not references_columns(exprs):  # literals alone: one row even of no columns
        return None
    if all(_is_projection(e) for e in exprs):
        return None  # cannot fail; kept above the slice, it stays fused with the scan
    (grandchild,) = node_inputs(child) or []
    return with_inputs(child, [with_inputs(node, [grandchild])])


def _is_projection(expr: Any) -> bool:
    """A column read as it is (``pl.col("a")``, ``pl.col("a").alias("b")``)."""
    if isinstance(expr, dict) and "Alias" in expr:
        expr = expr["Alias"][0]
    return isinstance(expr, dict) and set(expr) == {"Column"}


def with_slice(node: Node, offset: int, length: int) -> Node:
    """A copy of a ``Slice`` node with other bounds."""
    body = dict(node_body(node))
    body["offset"], body["len"] = offset, length
    return {"Slice": body}


def distinct_parts(node: Node) -> tuple[tuple[str, ...] | None, bool]:
    """``(subset exprs or None for all columns, maintain_order)`` of a ``Distinct`` node."""
    options = node_body(node)["options"]
    subset = options.get("subset")
    exprs = None if subset is None else tuple(json.dumps(e) for e in subset)
    return exprs, bool(options.get("maintain_order"))


def row_index_parts(node: Node) -> tuple[str, int] | None:
    """``(name, offset)`` of a ``with_row_index`` node, else ``None``."""
    function = node_body(node)["function"]
    if not isinstance(function, dict) or "RowIndex" not in function:
        return None
    spec = function["RowIndex"]
    return str(spec["name"]), int(spec.get("offset") or 0)


def expr_roots(exprs: list[Any]) -> set[str] | None:
    """Columns the expressions read; ``None`` when a selector or wildcard hides them."""
    roots: set[str] = set()
    for expr in exprs:
        if any(isinstance(e, dict) and ("Selector" in e or "Nth" in e) for e in walk_exprs(expr)):
            return None
        roots.update(expr_from_json(json.dumps(expr)).meta.root_names())
    return roots


def select_columns_node(node: Node, names: list[str]) -> Node:
    """``node.select(names)`` as a DSL node."""
    return select_node([{"Column": name} for name in names], node)


def select_node(exprs: list[Any], node: Node) -> Node:
    """``node.select(exprs)`` as a DSL node (expressions as DSL JSON objects)."""
    return {
        "Select": {
            "expr": exprs,
            "input": node,
            "options": {"run_parallel": True, "duplicate_check": True, "should_broadcast": True},
        }
    }


def filter_predicate(node: Node) -> Any:
    """Predicate of a ``Filter`` node."""
    return node_body(node)["predicate"]


def sort_keys(node: Node) -> list[Any]:
    """Key expressions of a ``Sort`` node."""
    return list(node_body(node)["by_column"])


def distinct_subset(node: Node) -> list[Any] | None:
    """Subset expressions of a ``Distinct`` node (``None``: all columns)."""
    return node_body(node)["options"].get("subset")


def join_how_and_suffix(node: Node) -> tuple[str, str]:
    """``(how, suffix)`` of a ``Join`` node; ``how`` is ``"asof"`` etc. for special joins."""
    args = node_body(node)["options"]["args"]
    how = args["how"] if isinstance(args["how"], str) else next(iter(args["how"]))
    return how.lower(), str(args.get("suffix") or "_right")


def join_key_exprs(node: Node) -> tuple[list[Any], list[Any]] | None:
    """Left and right key expressions of an equi-join, else ``None``."""
    condition = node_body(node)["condition"]
    if not isinstance(condition, dict) or "Equi" not in condition:
        return None
    pairs = condition["Equi"]["on"]
    return [left for left, _ in pairs], [right for _, right in pairs]


def rename_mapping(node: Node) -> dict[str, str] | None:
    """``{new: existing}`` of a ``Rename`` map function, else ``None``."""
    function = node_body(node)["function"]
    if not isinstance(function, dict) or "Rename" not in function:
        return None
    spec = function["Rename"]
    return dict(zip(spec["new"], spec["existing"], strict=True))


def keep_column(node: Node, name: str) -> Node:
    """A ``Select`` node that also passes column ``name`` through (other nodes keep it)."""
    if node_kind(node) != "Select":
        return node
    body = dict(node_body(node))
    body["expr"] = [*body["expr"], {"Column": name}]
    return {"Select": body}


def with_distinct_subset(node: Node, columns: list[str]) -> Node:
    """A copy of a ``Distinct`` node whose subset is ``columns`` (explicit, not "all")."""
    body = dict(node_body(node))
    body["options"] = {**body["options"], "subset": [{"Column": c} for c in columns]}
    return {"Distinct": body}


def hconcat_is_plain(node: Node) -> bool:
    """Whether an ``HConcat`` pads short inputs with nulls (no strict check, no broadcasting)."""
    options = node_body(node).get("options", {})
    return not options.get("strict") and not options.get("broadcast_unit_length")
