"""What polars reads from each scan of a fragment, for ``engine.last_query_stats``.

A rank hands a scan partition (``Slice(scan, offset, len)``) to its consumer, which fuses its
own work into it; polars then pushes slices and projections into the scan, so a ``head(5)``
over a 2M-row partition reads 5 rows of one column. The rank's assigned range says nothing of
that. polars' post-optimization callback shows the plan it is about to run, scans included,
without changing it: :class:`ReadObservingRunner` reports each scan's slice and columns to
:class:`engine.stats.StageRecorder`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from engine.executor.fragments import FragmentRunner
from engine.plan import dsl

if TYPE_CHECKING:
    from engine.stats import StageRecorder

__all__ = ["ReadObservingRunner", "column_share", "dtype_width"]

_DTYPE_WIDTHS: Final = (
    (("Boolean",), 0.125),
    (("Int8", "UInt8"), 1.0),
    (("Int16", "UInt16"), 2.0),
    (("Int32", "UInt32", "Float32", "Date"), 4.0),
    (("Int64", "UInt64", "Float64", "Datetime", "Duration", "Time"), 8.0),
)
"""Bytes per row of fixed-width dtypes; anything else (strings, lists, decimals) counts 16."""


def dtype_width(dtype: pl.DataType) -> float:
    """In-memory bytes per row of a column of ``dtype`` (16 where the width varies).

    >>> dtype_width(pl.Int32), dtype_width(pl.Datetime("us")), dtype_width(pl.String)
    (4.0, 8.0, 16.0)
    """
    name = type(dtype).__name__ if not isinstance(dtype, type) else dtype.__name__
    return next((width for names, width in _DTYPE_WIDTHS if name in names), 16.0)


def column_share(scan_json: str) -> Callable[[list[str] | None], float]:
    """``columns -> their share of a row's bytes`` in a scan, by dtype width.

    The planner's bytes per row covers every column of the files; a query reading one column
    of eight reads a fraction of it. Reads the scan's schema once (a parquet footer).
    """
    try:
        schema = dsl.lazyframe_from_dsl(scan_json).collect_schema()
        widths = {name: dtype_width(dtype) for name, dtype in schema.items()}
    except Exception:  # stats must never fail a query: count all columns
        widths = {}
    total = sum(widths.values())

    def share(columns: list[str] | None) -> float:
        if columns is None or not total:
            return 1.0
        return min(1.0, sum(widths.get(name, 8.0) for name in columns) / total)

    return share


class ReadObservingRunner(FragmentRunner):
    """A CPU fragment runner that tells the recorder what polars reads from each scan.

    polars' post-optimization callback sees the plan polars is about to run; a scan there
    carries the slice it reads (``n_rows``: offset, rows, after slice pushdown) and the columns
    (``with_columns``, after projection pushdown). The callback only looks: polars then runs
    the plan itself, as without it. GPU fragments keep cudf-polars' own callback (their scans
    count whole).
    """

    def __init__(self, stages: StageRecorder) -> None:
        super().__init__("cpu")
        self._stages = stages

    def collect(self, lf: pl.LazyFrame) -> pl.DataFrame:
        """Run one fragment, noting its scans' reads."""
        return lf.collect(engine="in-memory", post_opt_callback=self._observe)

    def _observe(self, traverser: Any, *_: Any) -> None:
        try:
            reads = list(_scan_reads(traverser))
        except Exception:  # a plan the visitor cannot show: its reads count whole
            return
        for offset, length, columns in reads:
            self._stages.scan_read(offset, length, columns)


def _scan_reads(traverser: Any) -> Iterator[tuple[int, int, list[str] | None]]:
    """``(offset, rows, columns)`` of every sliced scan in polars' optimized plan."""
    node = traverser.view_current_node()
    if type(node).__name__ == "Scan" and node.file_options.n_rows is not None:
        offset, length = node.file_options.n_rows
        columns = node.file_options.with_columns
        yield int(offset), int(length), None if columns is None else list(columns)
    current = traverser.get_node()
    for child in traverser.get_inputs():
        traverser.set_node(child)
        yield from _scan_reads(traverser)
    traverser.set_node(current)
