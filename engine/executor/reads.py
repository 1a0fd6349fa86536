"""What polars reads from each scan of a fragment, for ``engine.last_query_stats``.

A rank hands a scan partition (``Slice(scan, offset, len)``) to its consumer, which fuses its
own work into it; polars then pushes slices and projections into the scan, so a ``head(5)``
over a 2M-row partition reads 5 rows of one column. The rank's assigned range says nothing of
that. polars' optimized plan shows what each scan reads: :class:`ReadObservingRunner` reports
each scan's slice and columns to :class:`engine.stats.StageRecorder`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import polars as pl

from engine.executor.fragments import FragmentRunner
from engine.plan.small_inputs import plan_leaves

if TYPE_CHECKING:
    from engine.stats import StageRecorder

__all__ = ["ReadObservingRunner"]


class ReadObservingRunner(FragmentRunner):
    """A CPU fragment runner that tells the recorder what polars reads from each scan.

    ``LazyFrame._ldf.visit()`` optimizes the fragment (about 0.3 ms) and shows the plan polars
    will run; a scan there carries the slice it reads (``n_rows``: offset, rows, after slice
    pushdown) and the columns (``with_columns``, after projection pushdown). Not polars'
    ``post_opt_callback``, which shows the same plan: any callback made the streaming engine
    run TPC-H Q1's partial aggregation 30% slower (0.96 s against 0.73 s at SF1, 2 threads).
    """

    def __init__(self, stages: StageRecorder) -> None:
        super().__init__()
        self._stages = stages

    def collect(self, lf: pl.LazyFrame, *, over_registered: bool = False) -> pl.DataFrame:
        """Run one fragment, noting its scans' reads."""
        self._observe(lf)
        return super().collect(lf, over_registered=over_registered)

    def _observe(self, lf: pl.LazyFrame) -> None:
        try:
            reads = list(_scan_reads(lf._ldf.visit()))
        except (Exception, pl.exceptions.PanicException):  # not shown: its reads count whole
            return
        for offset, length, columns in reads:
            self._stages.scan_read(offset, length, columns)


def _scan_reads(traverser: Any) -> Iterator[tuple[int, int, list[str] | None]]:
    """``(offset, rows, columns)`` of every sliced scan in polars' optimized plan."""
    for leaf in plan_leaves(traverser):
        if type(leaf).__name__ == "Scan" and leaf.file_options.n_rows is not None:
            offset, length = leaf.file_options.n_rows
            columns = leaf.file_options.with_columns
            yield int(offset), int(length), None if columns is None else list(columns)
