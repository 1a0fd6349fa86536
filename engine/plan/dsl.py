"""Everything that reads or writes polars' DSL JSON lives here, so a format change touches one file.

The planner reasons about plan *structure*: which node, which inputs, whether an expression is
elementwise, whether an aggregation decomposes. Expressions themselves stay opaque JSON strings
that polars deserializes and evaluates (:func:`expr_from_json`).
"""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import polars as pl

__all__ = [
    "LEAF_MARKER",
    "SUPPORTED_POLARS",
    "AggPart",
    "check_polars_version",
    "decompose_agg",
    "expr_from_json",
    "is_elementwise",
    "lazyframe_from_dsl",
    "leaf_marker",
    "node_inputs",
    "node_kind",
    "serialize_plan",
    "with_inputs",
]

SUPPORTED_POLARS: Final = ((1, 44, 1), (1, 45, 0))
"""Polars versions whose DSL JSON this module reads: ``>=1.44.1,<1.45`` (as pyproject pins)."""

LEAF_MARKER: Final = "__polars_hpc_leaf__"
"""Key of the placeholder that stands for a fragment's input in a DSL template."""

Node = dict[str, Any]

# Which fields of each DSL node hold its input plans (a list field holds several).
_INPUT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "Filter": ("input",),
    "Select": ("input",),
    "HStack": ("input",),
    "MapFunction": ("input",),
    "GroupBy": ("input",),
    "Sort": ("input",),
    "Slice": ("input",),
    "Distinct": ("input",),
    "Cache": ("input",),
    "Join": ("input_left", "input_right"),
    "Union": ("inputs",),
    "HConcat": ("inputs",),
    "Scan": (),
    "DataFrameScan": (),
    "PythonScan": (),
}

# Function names (``{"function": NAME}`` or ``{"function": {NAME: ...}}``) evaluated row by row.
_ELEMENTWISE_FUNCTIONS: Final = frozenset(
    {
        "Abs",
        "Negate",
        "Round",
        "RoundSF",
        "Floor",
        "Ceil",
        "Clip",
        "Coalesce",
        "FillNull",
        "AsStruct",
        "Sqrt",
        "Cbrt",
        "Exp",
        "Log",
        "Log1p",
        "Sign",
        "Pow",
        "Trigonometry",
        "MaxHorizontal",
        "MinHorizontal",
        "SumHorizontal",
        "MeanHorizontal",
        "Hash",
        "ToPhysical",
        "Replace",
        "ReplaceStrict",
    }
)

# Function families that are elementwise except for the members listed (those aggregate or
# look at neighbouring rows).
_ELEMENTWISE_FAMILIES: Final[dict[str, frozenset[str]]] = {
    "StringExpr": frozenset({"ConcatVertical"}),
    "TemporalExpr": frozenset(),
    "StructExpr": frozenset(),
    "ListExpr": frozenset(),
    "ArrayExpr": frozenset(),
    "BinaryExpr": frozenset(),
}

# Families whose members mostly aggregate or look at other rows: only these members are
# elementwise (``Boolean: HasNulls``, ``Any``, ``IsUnique`` ... are not).
_ELEMENTWISE_MEMBERS: Final[dict[str, frozenset[str]]] = {
    "Boolean": frozenset(
        {
            "IsNull",
            "IsNotNull",
            "IsFinite",
            "IsInfinite",
            "IsNan",
            "IsNotNan",
            "Not",
            "IsBetween",
            "IsClose",
            "AllHorizontal",
            "AnyHorizontal",
        }
    ),
}


def check_polars_version(version: str = pl.__version__) -> None:
    """Refuse a polars whose DSL format this module was not written against.

    >>> check_polars_version("1.44.2")
    >>> check_polars_version("1.46.0")
    Traceback (most recent call last):
    ...
    RuntimeError: polars 1.46.0 is not supported by the distributed planner ...
    """
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    low, high = SUPPORTED_POLARS
    if not low <= parts < high:
        raise RuntimeError(
            f"polars {version} is not supported by the distributed planner (it reads polars' "
            f"plan format, which changes between releases); install polars>=1.44.1,<1.45"
        )


def serialize_plan(lf: pl.LazyFrame) -> Node:
    """The query as a DSL tree (``lf.serialize(format="json")``, its format warning silenced).

    A LazyFrame whose schema was asked for carries ``{"IR": {"dsl": ...}}`` nodes, polars'
    cache of the resolved plan; the planner reads the ``dsl`` inside them.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _without_ir_nodes(json.loads(lf.serialize(format="json")))


def _without_ir_nodes(tree: Any) -> Any:
    """``tree`` with every cached ``IR`` plan node replaced by the DSL it was resolved from."""
    if isinstance(tree, list):
        return [_without_ir_nodes(item) for item in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1 and isinstance(tree.get("IR"), dict) and "dsl" in tree["IR"]:
        return _without_ir_nodes(tree["IR"]["dsl"])
    return {key: _without_ir_nodes(value) for key, value in tree.items()}


def lazyframe_from_dsl(node: Node | str) -> pl.LazyFrame:
    """Rebuild a LazyFrame from a DSL tree or its JSON text."""
    text = node if isinstance(node, str) else json.dumps(node)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pl.LazyFrame.deserialize(io.StringIO(text), format="json")


def expr_from_json(text: str) -> pl.Expr:
    """Rebuild one expression from its JSON text."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pl.Expr.deserialize(io.StringIO(text), format="json")


def node_kind(node: Node) -> str:
    """The DSL node's type name, e.g. ``"Filter"``."""
    return next(iter(node))


def node_body(node: Node) -> dict[str, Any]:
    """The node's fields."""
    return node[node_kind(node)]


def node_inputs(node: Node) -> list[Node] | None:
    """Input plans of ``node``; ``None`` when this module does not know the node's inputs."""
    fields = _INPUT_FIELDS.get(node_kind(node))
    if fields is None:
        return None
    body = node_body(node)
    out: list[Node] = []
    for name in fields:
        value = body[name]
        out.extend(value if isinstance(value, list) else [value])
    return out


def with_inputs(node: Node, inputs: list[Node]) -> Node:
    """A copy of ``node`` whose inputs are ``inputs`` (same order as :func:`node_inputs`)."""
    kind = node_kind(node)
    body = dict(node_body(node))
    queue = list(inputs)
    for name in _INPUT_FIELDS[kind]:
        if isinstance(body[name], list):
            body[name], queue = queue[: len(body[name])], queue[len(body[name]) :]
        else:
            body[name] = queue.pop(0)
    return {kind: body}


def leaf_marker(index: int = 0) -> Node:
    """Placeholder for input ``index`` of a template; the executor replaces it with real input."""
    return {LEAF_MARKER: index}


def leaf_marker_text(index: int = 0) -> str:
    """The marker as it appears in a template's JSON text."""
    return json.dumps(leaf_marker(index))


def fill_leaves(template: str, leaves: list[str]) -> str:
    """Replace the markers of ``template`` by the DSL JSON texts ``leaves``, in order."""
    for index, leaf in enumerate(leaves):
        template = template.replace(leaf_marker_text(index), leaf)
    return template


def slice_leaf(scan_json: str, offset: int, length: int) -> str:
    """DSL JSON of rows ``offset:offset+length`` of a scan (polars pushes the slice into it)."""
    return f'{{"Slice": {{"input": {scan_json}, "offset": {offset}, "len": {length}}}}}'


def scan_format(node: Node) -> str:
    """``parquet``, ``csv``, ``ipc``, ``ndjson`` (lower case) of a ``Scan`` node."""
    return node_kind(node_body(node)["scan_type"]).lower()


def scan_sources(node: Node) -> list[str]:
    """The paths (or globs) a ``Scan`` node reads; empty for in-memory buffers."""
    sources = node_body(node)["sources"]
    return [p["inner"] for p in sources.get("Paths", [])] if isinstance(sources, dict) else []


def walk_exprs(expr: Any) -> Iterator[Any]:
    """Every sub-tree of an expression tree, parents first."""
    yield expr
    if isinstance(expr, dict):
        for value in expr.values():
            yield from walk_exprs(value)
    elif isinstance(expr, list):
        for value in expr:
            yield from walk_exprs(value)


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


def snake_case(name: str) -> str:
    """``CumSum`` -> ``cum_sum``: polars' Rust names as its Python API spells them."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_EXPR_OPERATION_NAMES: Final[dict[str, str]] = {
    "AnonymousFunction": "map_batches (a Python function over the whole column)",
    "Literal": "a Series literal",  # a scalar literal is elementwise and never named
    "Window": "over",
    "Over": "over",
    "Rolling": "rolling",
    "Eval": "eval",
    "SortBy": "sort_by",
    "Filter": "filter inside an expression",
}


def describe_whole_frame_operation(exprs: list[Any]) -> str | None:
    """Name of the first operation in ``exprs`` that needs more than one row at a time.

    Fallback reasons name it, so a user sees ``cum_sum`` rather than "not elementwise".

    >>> describe_whole_frame_operation(
    ...     [{"Function": {"input": [{"Column": "a"}], "function": {"CumSum": {"reverse": False}}}}]
    ... )
    'cum_sum'
    """
    for expr in exprs:
        for sub in walk_exprs(expr):
            if not isinstance(sub, dict) or len(sub) != 1 or is_elementwise(sub):
                continue
            kind, body = next(iter(sub.items()))
            if kind == "Agg":
                return snake_case(next(iter(body)))
            if kind == "Function":
                name, member = _function_name(body["function"])
                if not _function_is_elementwise(body):
                    return snake_case(member if name in _ELEMENTWISE_MEMBERS and member else name)
                continue
            if kind in _EXPR_OPERATION_NAMES:
                return _EXPR_OPERATION_NAMES[kind]
            if kind in _WHOLE_FRAME_EXPRS:
                return snake_case(kind)
    return None


_WHOLE_FRAME_EXPRS: Final = frozenset({"Gather", "Slice", "Sort", "Explode", "Len"})


def references_columns(expr: Any) -> bool:
    """Whether the expression reads any column (a frame-length result, not a scalar)."""
    return any(isinstance(e, dict) and ("Column" in e or "Selector" in e) for e in walk_exprs(expr))


def _function_name(function: Any) -> tuple[str, str | None]:
    """``(name, member)`` of a function, e.g. ``("StringExpr", "Uppercase")``."""
    if isinstance(function, str):
        return function, None
    name = next(iter(function))
    member = function[name]
    if isinstance(member, dict) and len(member) == 1:
        return name, next(iter(member))
    return name, member if isinstance(member, str) else None


def is_elementwise(expr: Any) -> bool:
    """Whether ``expr`` computes each output row from the same input row only.

    Such expressions give the same answer on any split of the rows, so they run per partition.
    Anything not known to be elementwise is treated as not elementwise (never a wrong answer).

    >>> is_elementwise({"BinaryExpr": {"left": {"Column": "a"}, "op": "Plus",
    ...                                "right": {"Literal": {"Dyn": {"Int": 1}}}}})
    True
    >>> is_elementwise({"Agg": {"Sum": {"Column": "a"}}})
    False
    """
    if isinstance(expr, str):
        return expr in ("Element",)
    if not isinstance(expr, dict) or len(expr) != 1:
        return False
    kind, body = next(iter(expr.items()))
    if kind in ("Column", "Selector", "Element"):
        return True
    if kind == "Literal":
        return "Series" not in body
    if kind == "Alias":
        return is_elementwise(body[0])
    if kind in ("KeepName", "Field"):
        return isinstance(body, list) or is_elementwise(body)
    if kind == "RenameAlias":
        return is_elementwise(body["expr"])
    if kind == "BinaryExpr":
        return is_elementwise(body["left"]) and is_elementwise(body["right"])
    if kind == "Cast":
        return is_elementwise(body["expr"])
    if kind == "Eval":  # list.eval / arr.eval work inside each row's list; cumulative_eval not
        variant = body["variant"]
        per_row = variant == "List" or (isinstance(variant, dict) and "Array" in variant)
        return per_row and is_elementwise(body["expr"])
    if kind == "Ternary":
        return all(is_elementwise(body[k]) for k in ("predicate", "truthy", "falsy"))
    if kind == "AnonymousFunction":
        flags = str(body.get("options", {}).get("flags", ""))
        separable = "ROW_SEPARABLE" in flags and "LENGTH_PRESERVING" in flags
        return separable and all(is_elementwise(e) for e in body["input"])
    if kind == "Function":
        return _function_is_elementwise(body) and all(is_elementwise(e) for e in body["input"])
    return False


def _function_is_elementwise(body: dict[str, Any]) -> bool:
    name, member = _function_name(body["function"])
    if name == "Boolean" and member == "IsIn":
        return all("Literal" in e for e in body["input"][1:])
    if name in _ELEMENTWISE_FAMILIES:
        return member not in _ELEMENTWISE_FAMILIES[name]
    if name in _ELEMENTWISE_MEMBERS:
        return member in _ELEMENTWISE_MEMBERS[name]
    return name in _ELEMENTWISE_FUNCTIONS


@dataclass(frozen=True)
class AggPart:
    """One partial aggregation of a decomposed aggregation, and how partials combine.

    ``partial`` is the expression JSON (aliased to the temporary column ``name``) evaluated per
    partition; ``combine`` names the aggregation that merges partials: ``sum``, ``min``, ``max``,
    ``nan_min``, ``nan_max``, ``first`` or ``last``.
    """

    partial: str
    combine: str
    name: str


@dataclass(frozen=True)
class DecomposedAgg:
    """An aggregation as partial parts plus the expression that finishes it from them.

    ``final`` is expression JSON over the combined partial columns (an aggregation such as
    ``sum(a) / max(b) * 100`` finishes as ``p0 / p1 * 100``).
    """

    parts: tuple[AggPart, ...]
    final: str
    has_mean: bool


_COMBINE_OF: Final[dict[str, str]] = {
    "Sum": "sum",
    "Count": "sum",
    "First": "first",
    "Last": "last",
}
_SCALAR_WRAPPERS: Final = frozenset({"Alias", "BinaryExpr", "Cast", "Ternary", "Function"})


def decompose_agg(
    expr: Any, temp_prefix: str, position_column: str | None = None
) -> DecomposedAgg | None:
    """Split an aggregation expression into partials, or ``None`` when it does not decompose.

    Decomposes ``len``, ``sum``, ``count``, ``min``, ``max``, ``first``, ``last`` and ``mean``
    (as sum and count) of elementwise inputs, and elementwise expressions over those
    (``sum(a) / len() * 100``); anything else is aggregated once, after a shuffle.
    With ``position_column`` (each row's global position, from a row index below) also
    ``index_of``: each partition finds its first match and reports that row's position; the
    smallest position wins.

    >>> len(decompose_agg({"Agg": {"Sum": {"Column": "a"}}}, "_p0").parts)
    1
    >>> decompose_agg({"Agg": {"Median": {"Column": "a"}}}, "_p0") is None
    True
    """
    parts: list[AggPart] = []
    final = _decompose(expr, temp_prefix, parts, position_column)
    if final is None or not parts:
        return None
    has_mean = any(p.name.endswith("_mean_sum") for p in parts)
    return DecomposedAgg(tuple(parts), json.dumps(final), has_mean)


def _decompose(
    expr: Any, prefix: str, parts: list[AggPart], position_column: str | None = None
) -> Any | None:
    """The finishing expression of ``expr`` (appending its partials to ``parts``), or None."""

    def part(e: Any, combine: str, role: str = "") -> dict[str, str]:
        name = f"{prefix}_{len(parts)}{role}"
        parts.append(AggPart(json.dumps({"Alias": [e, name]}), combine, name))
        return {"Column": name}

    if expr == "Len":  # summed wide, so a total past polars' index type fails its cast
        return part(
            {"Cast": {"expr": "Len", "dtype": {"Literal": "UInt64"}, "options": "Strict"}}, "sum"
        )
    if not isinstance(expr, dict) or len(expr) != 1:
        return None
    kind, body = next(iter(expr.items()))
    if kind == "Agg":
        return _decompose_agg_node(expr, body, part)
    if kind == "Literal":
        return expr if "Series" not in body else None
    if kind not in _SCALAR_WRAPPERS:
        return None
    if kind == "Function" and body["function"] == "IndexOf" and position_column is not None:
        searched, value = body["input"]
        if not is_elementwise(searched) or references_columns(value):
            return None
        local_row = pl.int_range(pl.len()).meta.serialize(format="json")
        found = {"BinaryExpr": {"left": json.loads(local_row), "op": "Eq", "right": expr}}
        at = {"Filter": {"input": {"Column": position_column}, "by": found}}
        return part({"Agg": {"First": at}}, "min")
    if kind == "Function" and not _function_is_elementwise(body):
        return None
    return _map_children(expr, lambda child: _decompose(child, prefix, parts, position_column))


def uses_index_of(exprs: list[Any]) -> bool:
    """Whether an expression calls ``index_of`` (its partials need each row's position)."""
    return any(
        isinstance(e, dict) and e.get("Function", {}).get("function") == "IndexOf"
        for expr in exprs
        for e in walk_exprs(expr)
    )


def row_index_node(node: Node, name: str) -> Node:
    """``node.with_row_index(name)`` as a DSL node."""
    return {"MapFunction": {"input": node, "function": {"RowIndex": {"name": name, "offset": 0}}}}


def _decompose_agg_node(
    expr: Any, body: dict[str, Any], part: Callable[..., dict[str, str]]
) -> Any | None:
    ((kind, payload),) = body.items()
    if kind in ("Sum", "First", "Last"):
        return part(expr, _COMBINE_OF[kind]) if is_elementwise(payload) else None
    if kind == "Count":
        return part(expr, "sum") if is_elementwise(payload["input"]) else None
    if kind in ("Min", "Max"):
        if not is_elementwise(payload["input"]):
            return None
        return part(expr, ("nan_" if payload.get("propagate_nans") else "") + kind.lower())
    if kind == "Mean" and is_elementwise(payload):
        total = part({"Agg": {"Sum": payload}}, "sum", "_mean_sum")
        count = part({"Agg": {"Count": {"input": payload, "include_nulls": False}}}, "sum")
        mean = pl.when(pl.col(count["Column"]) > 0).then(
            pl.col(total["Column"]).cast(pl.Float64) / pl.col(count["Column"])
        )
        return json.loads(mean.meta.serialize(format="json"))
    return None


def _map_children(expr: Any, decompose: Callable[[Any], Any | None]) -> Any | None:
    """``expr`` with every sub-expression replaced by ``decompose(sub)``; None if one fails."""
    kind, body = next(iter(expr.items()))
    if kind == "Alias":
        inner = decompose(body[0])
        return None if inner is None else {"Alias": [inner, body[1]]}
    if kind == "BinaryExpr":
        left, right = decompose(body["left"]), decompose(body["right"])
        if left is None or right is None:
            return None
        return {"BinaryExpr": {**body, "left": left, "right": right}}
    if kind == "Cast":
        inner = decompose(body["expr"])
        return None if inner is None else {"Cast": {**body, "expr": inner}}
    if kind == "Ternary":
        mapped = {k: decompose(body[k]) for k in ("predicate", "truthy", "falsy")}
        return None if None in mapped.values() else {"Ternary": {**body, **mapped}}
    inputs = [decompose(child) for child in body["input"]]
    return None if None in inputs else {"Function": {**body, "input": inputs}}


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


_ROW_PRESERVING_MAPS: Final = frozenset({"Rename", "FillNan", "Unnest", "Hint"})


def slice_pushed_down(node: Node) -> Node | None:
    """``Slice(f(x))`` as ``f(Slice(x))`` when ``f`` keeps every row and computes it alone.

    polars pushes slices below such nodes, so a fallible expression (``list.get``, a strict
    cast) only ever sees the rows kept; evaluating it on a whole rank share first would raise
    where polars does not. ``None`` when the node under the slice is not such a node.
    """
    (child,) = node_inputs(node) or [None]
    if child is None:
        return None
    kind = node_kind(child)
    if kind in ("Select", "HStack"):
        exprs = select_exprs(child)
        if not exprs or not all(is_elementwise(e) for e in exprs):
            return None
        if not references_columns(exprs):  # literals alone: one row even of no columns
            return None
    elif not (kind == "MapFunction" and map_function_name(child) in _ROW_PRESERVING_MAPS):
        return None
    (grandchild,) = node_inputs(child) or []
    return with_inputs(child, [with_inputs(node, [grandchild])])


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


def window_partition_keys(exprs: list[Any]) -> tuple[str, ...] | None:
    """Partition keys shared by every ``over(keys)`` window in ``exprs`` (JSON texts).

    ``None`` unless each expression is elementwise apart from windows, and all windows
    partition by the same elementwise keys: then shuffling rows on those keys gives every rank
    whole groups and the expressions evaluate correctly per rank.
    """
    found: set[str] = set()
    if not all(_window_local(e, found) for e in exprs) or len(found) != 1:
        return None
    return tuple(json.dumps(k) for k in json.loads(found.pop()))


def window_key_set(expr: Any) -> str | None:
    """The partition keys (JSON) of the one key set ``expr``'s windows use.

    ``""`` for an elementwise expression (no window at all); ``None`` when the expression is
    neither elementwise nor built from windows over one key set.
    """
    if is_elementwise(expr):
        return ""
    found: set[str] = set()
    if not _window_local(expr, found) or len(found) != 1:
        return None
    return found.pop()


def _window_local(expr: Any, found: set[str]) -> bool:
    if is_elementwise(expr):
        return True
    if not isinstance(expr, dict) or len(expr) != 1:
        return False
    kind, body = next(iter(expr.items()))
    if kind == "Over":
        keys = body["partition_by"]
        if not keys or not all(is_elementwise(k) for k in keys):
            return False
        found.add(json.dumps(keys))
        return body.get("mapping") == "GroupsToRows"
    if kind == "Function" and not _function_is_elementwise(body):
        return False
    if kind not in _SCALAR_WRAPPERS:
        return False
    children: list[Any] = []
    _map_children(expr, lambda child: children.append(child) or child)
    return all(_window_local(child, found) for child in children)


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
