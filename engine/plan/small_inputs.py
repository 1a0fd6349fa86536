"""Queries whose whole input already sits in the calling process, and how big it is.

A query over in-memory frames of a few rows costs polars well under a millisecond, and the
engine 20-30 ms of Dask task round trips to run it on every rank. When every input of a query
is an in-memory frame and together they are small, :class:`engine.dask.DaskEngine` runs it
with polars in the calling process (``StreamingOptions.client_fast_path_bytes``). The inputs
are read from polars' own optimized plan (``LazyFrame._ldf.visit()``, ~0.05 ms), the plan
``collect`` would run, so a projection or filter polars pushes into a scan is already there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import polars as pl

from engine.plan.estimates import FILE_FORMATS, scan_size

__all__ = ["estimated_input_bytes", "in_memory_input_bytes", "plan_leaves"]


def plan_leaves(traverser: Any) -> Iterator[Any]:
    """The leaf nodes (scans, frames, Python sources) of polars' optimized plan, in order.

    ``traverser`` is ``LazyFrame._ldf.visit()``; it is left at the node it was given.
    """
    inputs = traverser.get_inputs()
    if not inputs:
        yield traverser.view_current_node()
        return
    current = traverser.get_node()
    for child in inputs:
        traverser.set_node(child)
        yield from plan_leaves(traverser)
    traverser.set_node(current)


def in_memory_input_bytes(lf: pl.LazyFrame) -> int | None:
    """Bytes of ``lf``'s input frames when every input is an in-memory frame, else ``None``.

    A scan of files or of a Python source (``register_io_source``, pyarrow datasets) is not
    in memory; a plan polars cannot show counts as not in memory too.

    >>> frame = pl.DataFrame({"a": [1, 2, 3]})
    >>> in_memory_input_bytes(frame.lazy().join(frame.lazy(), on="a"))
    48
    >>> in_memory_input_bytes(pl.scan_csv("any.csv")) is None
    True
    """
    total = 0
    try:
        for leaf in plan_leaves(lf._ldf.visit()):
            if type(leaf).__name__ != "DataFrameScan":
                return None
            total += _frame_bytes(leaf)
    except (Exception, pl.exceptions.PanicException):
        return None
    return total


def estimated_input_bytes(lf: pl.LazyFrame) -> float:
    """Bytes in memory of everything ``lf`` reads: its frames' and its files' estimates.

    A file source whose size cannot be told (a URL, a buffer, a missing file) counts as
    infinite; a Python source (``register_io_source``) as nothing, as polars cannot say.

    >>> estimated_input_bytes(pl.LazyFrame({"a": [1, 2, 3]}))
    24.0
    """
    try:
        return sum((_leaf_bytes(leaf) for leaf in plan_leaves(lf._ldf.visit())), 0.0)
    except (Exception, pl.exceptions.PanicException):
        return math.inf


def _frame_bytes(leaf: Any) -> int:
    return pl.DataFrame._from_pydf(leaf.df).estimated_size()


def _leaf_bytes(leaf: Any) -> float:
    kind = type(leaf).__name__
    if kind == "DataFrameScan":
        return float(_frame_bytes(leaf))
    if kind != "Scan":
        return 0.0
    file_format = leaf.scan_type[0]
    paths = [str(path) for path in leaf.paths]
    if file_format not in FILE_FORMATS or not paths:
        return math.inf
    try:
        size = scan_size(file_format, paths)
    except OSError:
        return math.inf
    columns = leaf.file_options.with_columns
    if columns is None or not size.column_bytes:
        return size.total_bytes
    # Only the columns polars' projection pushdown reads: TPC-H Q21 reads 4 of lineitem's 16
    # columns. A column the files lack (a hive or row-index column) counts as nothing.
    return size.of_columns(list(columns), rows=0)
