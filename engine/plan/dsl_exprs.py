"""The planner's reading of expressions in polars' DSL JSON: what may run per partition.

Expressions stay opaque JSON that polars deserializes and evaluates; the planner only asks
whether one computes each row from that row alone (:func:`is_elementwise`, an allow-list),
whether an aggregation splits into partials and a finish (:func:`decompose_agg`), which keys
its windows partition by (:func:`window_key_set`), and what to call an operation in a fallback
reason (:func:`describe_whole_frame_operation`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import polars as pl

from engine.plan.dsl import references_columns, walk_exprs

__all__ = [
    "AggPart",
    "DecomposedAgg",
    "decompose_agg",
    "describe_whole_frame_operation",
    "is_elementwise",
    "snake_case",
    "uses_index_of",
    "window_key_set",
    "window_partition_keys",
]

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
