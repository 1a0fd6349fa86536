"""How many bytes a scan produces in memory: the input of broadcast-or-shuffle decisions.

A broadcast join side is held, decoded, by every rank, so what matters is its size in memory,
not on disk. Parquet files are compressed and encoded well below their size in memory (TPC-H
SF1 from tpchgen-cli: lineitem 221 MiB on disk, 851 MiB as a polars frame; orders 61 and 162
MiB), so a side that looks small on disk can be several times ``broadcast_limit`` on every
rank. Parquet's footer says, per column chunk, how large the
pages are before compression (``total_uncompressed_size``); that is the estimate, per column, so
a scan pruned to a few columns is estimated by those columns alone. Dictionary- and
run-length-encoded pages hold encoded values, smaller than the decoded column, so each column
counts at least its rows times its fixed in-memory width (16 bytes for a string view). CSV and
NDJSON are text (about their size in memory or more); IPC files are taken at their size.
:func:`plan_bytes` carries the sources' estimates up through a plan; :func:`column_share`
scales a scan's bytes per row to the columns a fragment reads (``engine.stats``).
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from engine.plan import dsl
from engine.plan.nodes import (
    Concat,
    FrameSource,
    Join,
    PlanNode,
    ScanSource,
    SingleRank,
    WholeQuery,
)

__all__ = [
    "FILE_FORMATS",
    "ScanSize",
    "column_share",
    "dtype_width",
    "expand_paths",
    "plan_bytes",
    "scan_size",
]

FILE_FORMATS: Final = frozenset({"parquet", "csv", "ipc", "ndjson"})
"""File formats the planner splits into row ranges and :func:`scan_size` can size."""


MAX_FOOTERS: Final = 64
"""Parquet footers read per scan at most; beyond that a spread sample is scaled up by size."""


@dataclass(frozen=True)
class ScanSize:
    """Estimated in-memory bytes of a scan: in all, and per top-level column where known."""

    total_bytes: float
    column_bytes: Mapping[str, float] = field(default_factory=dict)

    def of_columns(self, names: Sequence[str], rows: int) -> float:
        """Bytes of the columns ``names``; a name the files lack (computed) counts 8 per row.

        >>> ScanSize(100.0, {"a": 60.0, "b": 40.0}).of_columns(["b", "c"], rows=2)
        56.0
        """
        return sum(self.column_bytes.get(name, 8.0 * rows) for name in names)


def expand_paths(paths: Sequence[str]) -> list[str]:
    """The files behind paths, globs and (hive) directories, in a stable order."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, _, names in sorted(os.walk(path)):
                files.extend(os.path.join(root, name) for name in sorted(names))
        else:
            files.extend(sorted(glob.glob(path, recursive=True)))
    return files


def scan_size(file_format: str, paths: Sequence[str]) -> ScanSize:
    """Estimated in-memory bytes of scanning ``paths`` (see the module docstring for why)."""
    files = expand_paths(paths)
    on_disk = [os.path.getsize(f) for f in files]
    if file_format != "parquet":
        return ScanSize(float(sum(on_disk)))
    parquet = [(f, size) for f, size in zip(files, on_disk, strict=True) if _is_parquet(f)]
    if not parquet:
        return ScanSize(float(sum(on_disk)))
    step = max(1, -(-len(parquet) // MAX_FOOTERS))
    sample = parquet[::step]
    columns: dict[str, float] = {}
    for path, _ in sample:
        for name, nbytes in _column_bytes(path).items():
            columns[name] = columns.get(name, 0.0) + nbytes
    scale = sum(size for _, size in parquet) / max(sum(size for _, size in sample), 1)
    columns = {name: nbytes * scale for name, nbytes in columns.items()}
    return ScanSize(sum(columns.values()), columns)


def _is_parquet(path: str) -> bool:
    """Hive directories hold other files too (``_SUCCESS``, ``.crc``): only parquet counts."""
    with open(path, "rb") as file:
        return file.read(4) == b"PAR1"


def parquet_footer(path: str) -> Any:
    """The footer (``pyarrow.parquet.FileMetaData``) of one parquet file.

    Kept while the file's modification time and size stay the same: planning a query reads
    the footers of its files twice (row count, column sizes), and a session plans many
    queries over the same files.
    """
    stat = os.stat(path)
    return _footer(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _footer(path: str, mtime_ns: int, size: int) -> Any:
    import pyarrow.parquet as pq

    return pq.read_metadata(path)


def plain_parquet_rows(node: dsl.Node) -> int | None:
    """Rows of a scan of one plain parquet file, from its footer; ``None`` for any other scan.

    Only one file named as such, with no slice or deletion files: polars' own count of a
    directory or glob can leave out files (hidden ones, say) that a listing here would count,
    and a wrong count would give wrong row ranges.
    """
    paths = dsl.scan_sources(node)
    args = dsl.node_body(node).get("unified_scan_args") or {}
    if (
        dsl.scan_format(node) != "parquet"
        or len(paths) != 1
        or any(args.get(key) is not None for key in ("pre_slice", "deletion_files", "row_count"))
        or any(ch in paths[0] for ch in "*?[")
        or not os.path.isfile(paths[0])
    ):
        return None
    try:
        return int(parquet_footer(paths[0]).num_rows)
    except (OSError, ValueError):
        return None


def _column_bytes(path: str) -> dict[str, float]:
    """Uncompressed bytes per top-level column of one parquet file, from its footer."""
    metadata = parquet_footer(path)
    owner: list[str] = []
    for top in metadata.schema.to_arrow_schema():
        owner.extend([top.name] * _leaves(top.type))
    out = dict.fromkeys(owner, 0.0)
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            out[owner[index]] += row_group.column(index).total_uncompressed_size
    for top in metadata.schema.to_arrow_schema():
        out[top.name] = max(out[top.name], metadata.num_rows * _width(top.type))
    return out


def _width(dtype: object) -> float:
    """Bytes per row of a column in memory at least: its fixed width, 16 for a string view.

    Dictionary- and run-length-encoded pages can be far smaller than the column they decode
    to (TPC-H's ``o_orderpriority``: five values); this floor keeps them honest.
    """
    import pyarrow as pa

    if isinstance(dtype, pa.StructType):
        return sum(_width(dtype.field(i).type) for i in range(dtype.num_fields))
    if isinstance(dtype, pa.DictionaryType):
        return _width(dtype.value_type)
    try:
        return max(dtype.bit_width / 8, 0.125)  # type: ignore[attr-defined]
    except ValueError:  # variable width: strings, binaries, lists (a view or an offset)
        return 16.0


def _leaves(dtype: object) -> int:
    """Parquet leaf columns of one Arrow type (structs and maps have several)."""
    import pyarrow as pa

    if isinstance(dtype, pa.StructType):
        return sum(_leaves(dtype.field(i).type) for i in range(dtype.num_fields))
    if isinstance(dtype, pa.MapType):
        return _leaves(dtype.key_type) + _leaves(dtype.item_type)
    lists = ("ListType", "LargeListType", "FixedSizeListType", "ListViewType", "LargeListViewType")
    if isinstance(dtype, tuple(getattr(pa, name) for name in lists if hasattr(pa, name))):
        return _leaves(dtype.value_type)
    return 1


def plan_bytes(node: PlanNode) -> float:
    """Upper estimate of a plan's output bytes in memory, flowing up from its sources.

    Scans count their uncompressed bytes (:func:`scan_size`), in-memory frames their
    ``estimated_size``; joins the sum of their sides, every other node its input.
    """
    if isinstance(node, ScanSource | FrameSource):
        return node.total_rows * node.bytes_per_row
    if isinstance(node, Join):
        return plan_bytes(node.left) + plan_bytes(node.right)
    if isinstance(node, SingleRank | Concat):
        return sum(plan_bytes(child) for child in node.inputs)
    if isinstance(node, WholeQuery):
        return node.input_bytes
    return plan_bytes(node.input)


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
