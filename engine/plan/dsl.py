"""polars' DSL JSON as a format: reading and writing it, and what the executor fills in.

Everything that parses or builds polars' DSL JSON lives in ``engine/plan/dsl*.py``, so a format
change touches those files only. This module is the vocabulary both clients share: supported
polars versions, plans and expressions to and from JSON, a node's kind, body and inputs; and
what the executor needs at run time: templates whose leaf markers it fills with its inputs
(:func:`fill_leaves`), scan slices (:func:`slice_leaf`), expressions rebuilt from JSON
(:func:`expr_from_json`). The planner's reading of plan nodes is :mod:`engine.plan.dsl_nodes`,
its reading of expressions (elementwise? decomposable?) :mod:`engine.plan.dsl_exprs`.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import polars as pl

__all__ = [
    "FRAME_MARKER",
    "LEAF_MARKER",
    "SUPPORTED_POLARS",
    "InMemoryFrames",
    "check_polars_version",
    "expr_from_json",
    "fill_leaves",
    "lazyframe_from_dsl",
    "leaf_marker",
    "leaf_marker_text",
    "node_body",
    "node_inputs",
    "node_kind",
    "references_columns",
    "scan_format",
    "scan_sources",
    "serialize_plan",
    "serialize_plan_and_frames",
    "slice_leaf",
    "walk_exprs",
    "with_inputs",
]

SUPPORTED_POLARS: Final = ((1, 44, 1), (1, 45, 0))
"""Polars versions whose DSL JSON this module reads: ``>=1.44.1,<1.45`` (as pyproject pins)."""


LEAF_MARKER: Final = "__polars_hpc_leaf__"
"""Key of the placeholder that stands for a fragment's input in a DSL template."""


FRAME_MARKER: Final = "__polars_hpc_frame__"
"""Key the planner adds to an in-memory frame's node: the frame's index in its
:class:`InMemoryFrames` (polars ignores the key; the node's own data is an empty frame)."""

_FRAME_START: Final = '{"DataFrameScan":{"df":['
"""How polars' JSON starts an in-memory frame: its binary serialization as an array of bytes.
Quotes inside JSON strings are escaped, so this text is always structure, never data."""

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
    """The query as a DSL tree, its in-memory frames replaced by empty ones (see below)."""
    return serialize_plan_and_frames(lf)[0]


def serialize_plan_and_frames(lf: pl.LazyFrame) -> tuple[Node, InMemoryFrames]:
    """The query as a DSL tree (``lf.serialize(format="json")``, its format warning silenced).

    polars writes an in-memory frame as a JSON array of its bytes: a 4 MiB frame became 4M
    Python ints that planning walked, dumped and re-read (3.6 s to plan a group-by). Each is
    cut out of the text first: its node keeps an empty frame of the same schema (every schema
    question gets the same answer) and :data:`FRAME_MARKER`, the frame's index in the
    returned :class:`InMemoryFrames`.

    A LazyFrame whose schema was asked for carries ``{"IR": {"dsl": ...}}`` nodes, polars'
    cache of the resolved plan; the planner reads the ``dsl`` inside them.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = lf.serialize(format="json")
    pieces: list[str] = []
    arrays: list[str] = []
    frames: list[pl.DataFrame] = []
    position = 0
    while (start := text.find(_FRAME_START, position)) >= 0:
        array_start = start + len(_FRAME_START) - 1
        array_end = text.index("]", array_start) + 1
        arrays.append(text[array_start:array_end])
        frames.append(_frame_of_array(arrays[-1]))
        empty = _bytes_array(frames[-1].clear().serialize())
        pieces += [text[position:array_start], f'{empty},"{FRAME_MARKER}":{len(arrays) - 1}']
        position = array_end
    pieces.append(text[position:])
    tree = _without_ir_nodes(json.loads("".join(pieces)))
    return tree, InMemoryFrames(tuple(arrays), tuple(frames))


@dataclass(frozen=True)
class InMemoryFrames:
    """The in-memory frames cut out of a serialized plan, as polars wrote them."""

    arrays: tuple[str, ...] = ()
    """Each frame's binary serialization as the JSON array text of its bytes."""
    frames: tuple[pl.DataFrame, ...] = ()
    """The same frames, decoded."""

    def frame(self, node: Node) -> pl.DataFrame:
        """The frame of a ``DataFrameScan`` node (its own, if it has no marker)."""
        index = node_body(node).get(FRAME_MARKER)
        if index is None:
            return lazyframe_from_dsl(node).collect(engine="in-memory")
        return self.frames[index]

    def to_json(self, node: Node) -> str:
        """JSON text of ``node`` with its frames' data put back, for polars to run.

        Text is spliced in: the arrays never become Python lists.
        """
        tokens: dict[str, str] = {}

        def restore(tree: Any) -> Any:
            if isinstance(tree, list):
                return [restore(item) for item in tree]
            if not isinstance(tree, dict):
                return tree
            if node_kind(tree) == "DataFrameScan" and FRAME_MARKER in node_body(tree):
                body = dict(node_body(tree))
                index = body.pop(FRAME_MARKER)
                token = f"{FRAME_MARKER}{index}"
                tokens[json.dumps(token)] = self.arrays[index]
                return {"DataFrameScan": {**body, "df": token}}
            return {key: restore(value) for key, value in tree.items()}

        text = json.dumps(restore(node))
        for token, array in tokens.items():
            text = text.replace(token, array)
        return text


def _frame_of_array(array: str) -> pl.DataFrame:
    """A frame from the JSON array text of its binary serialization (numpy parses the text)."""
    data = np.fromstring(array[1:-1], dtype=np.uint8, sep=",")
    return pl.DataFrame.deserialize(io.BytesIO(data.tobytes()))


def _bytes_array(data: bytes) -> str:
    return "[" + ",".join(map(str, data)) + "]"


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


def references_columns(expr: Any) -> bool:
    """Whether the expression reads any column (a frame-length result, not a scalar)."""
    return any(isinstance(e, dict) and ("Column" in e or "Selector" in e) for e in walk_exprs(expr))
