"""What polars reads from each scan of a fragment, for ``engine.last_query_stats``.

A rank hands a scan partition (``Slice(scan, offset, len)``) to its consumer, which fuses its
own work into it; polars then pushes slices and projections into the scan, so a ``head(5)``
over a 2M-row partition reads 5 rows of one column. The rank's assigned range says nothing of
that. polars' post-optimization callback shows the plan it is about to run, scans included,
without changing it: :class:`ReadObservingRunner` reports each scan's slice and columns to
:class:`engine.stats.StageRecorder`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import polars as pl

from engine.executor.fragments import FragmentRunner

if TYPE_CHECKING:
    from engine.stats import StageRecorder

__all__ = ["ReadObservingRunner"]


class ReadObservingRunner(FragmentRunner):
    """A CPU fragment runner that tells the recorder what polars reads from each scan.

    polars' post-optimization callback sees the plan polars is about to run; a scan there
    carries the slice it reads (``n_rows``: offset, rows, after slice pushdown) and the columns
    (``with_columns``, after projection pushdown). The callback only looks: polars then runs
    the plan itself, as without it. GPU fragments keep cudf-polars' own callback (their scans
    count whole).
    """

    def __init__(self, stages: StageRecorder) -> None:
        super().__init__()
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
