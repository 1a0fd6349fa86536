"""Which rows of an input each rank owns: the r-th of R contiguous slices, in rank order.

Planning knowledge, not execution: the client cuts in-memory frames with it before dispatch
(``engine.executor.results.rank_frames``) and each rank cuts its scans with it
(``engine.executor.rank``), so rank order is row order everywhere.
"""

from __future__ import annotations

__all__ = ["rank_row_range"]


def rank_row_range(total_rows: int, rank: int, nranks: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of rank ``rank``: the r-th of ``nranks`` contiguous slices.

    >>> [rank_row_range(10, r, 3) for r in range(3)]
    [(0, 3), (3, 6), (6, 10)]
    """
    return total_rows * rank // nranks, total_rows * (rank + 1) // nranks
