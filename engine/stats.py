"""Per-stage numbers of a query: recorded on each rank, summed up on the client.

Rank side, :class:`StageRecorder` wraps every stage's partition stream in
:class:`engine.executor.rank.RankExecutor`. Stages are generators nested in one another, so the
recorder keeps a stack: the time and bytes of one ``next()`` minus those of the stages it pulled
from are the stage's own (exclusive) share. Work a stage hands on lazily (a scan slice with a
filter, fused into the consumer's polars query) is therefore counted where it runs.

Rows and bytes scanned are what was read, not the rank's assigned range: a scan partition
handed to a consumer counts the rows polars reads of it after pushdown (a ``head(5)`` reads 5
rows), as polars' optimized plan shows them (:mod:`engine.executor.reads`), and bytes for the
columns read; a partition whose read is not seen (a sink, a GPU fragment) counts whole, and one
pulled but dropped (a slice that already had its rows) counts nothing.

Client side, :class:`QueryStats` (``engine.last_query_stats``) turns the ranks' records into one
row per stage: time (max and mean over ranks), rows and bytes scanned, rows out, bytes
shuffled, and skew (max / mean over ranks; 1.0 is perfectly balanced).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from engine.plan.estimates import column_share
from engine.plan.explain import describe_stage, plan_stages
from engine.plan.nodes import DistributedPlan, FrameSource, PlanNode, ScanSource, SingleRank

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "QueryStats",
    "StageRecord",
    "StageRecorder",
    "StageStats",
    "format_bytes",
]

StageRecord = dict[str, Any]
"""One rank's numbers for one stage: plain, msgpack-able data (it travels as a Dask event).

Keys: ``stage``, ``rank``, ``start``/``end`` (epoch seconds), ``seconds`` (exclusive),
``rows_scanned`` (rows read), ``bytes_scanned`` (those rows x the planner's bytes per row,
scaled to the columns read),
``rows_out`` (``None`` when the stage's output stayed lazy), ``bytes_shuffled``,
``bytes_spilled``, ``parts``.
"""

_LEGACY_KEYS: Final = ("bytes_shuffled", "fallbacks", "seconds")
_SLICE_TAIL: Final = re.compile(r'"offset": (\d+), "len": (\d+)}}$')
"""The end of a scan partition's JSON (``engine.plan.dsl.slice_leaf``): its rows."""


@dataclass
class _HandedPart:
    """A scan partition a consumer took; how much of it polars reads is not known yet."""

    stage: int
    offset: int
    length: int


class StageRecorder:
    """Measures each stage of one rank; calls ``on_done(record)`` when a stage finishes.

    Parameters
    ----------
    plan
        The plan the rank runs (stage numbers come from :func:`plan_stages`).
    comm
        The rank's communicator; its ``bytes_sent`` (if it counts) gives bytes shuffled.
    on_done
        Called with the stage's :data:`StageRecord` when the stage's stream ends on this rank
        (progress reporting); ``None``: nothing is sent while the query runs.
    spill
        The rank's spill policy; its ``spilled_bytes`` (if it has one) gives bytes spilled, so
        a stage whose shuffle went to disk says so.
    """

    def __init__(
        self,
        plan: DistributedPlan,
        comm: Any,
        on_done: Callable[[StageRecord], None] | None = None,
        spill: Any = None,
    ) -> None:
        self._comm = comm
        self._spill = spill
        self._on_done = on_done
        self._nodes = plan_stages(plan)
        self._number = {id(node): index for index, node in enumerate(self._nodes)}
        self._records: dict[int, StageRecord] = {}
        self._stack: list[list[float]] = []
        self._handed: list[_HandedPart] = []
        self._column_share: dict[int, Callable[[list[str] | None], float]] = {}

    def _bytes(self) -> int:
        return int(getattr(self._comm, "bytes_sent", 0))

    def _spilled(self) -> int:
        return int(getattr(self._spill, "spilled_bytes", 0))

    def record(self, node: PlanNode, parts: Iterator[Any]) -> Iterator[Any]:
        """Yield ``parts`` unchanged while measuring them as ``node``'s stage."""
        stage = self._number.get(id(node))
        if stage is None:  # a node built on the rank (not in the shipped plan): not a stage
            yield from parts
            return
        record = self._records.setdefault(stage, self._new_record(stage))
        try:
            while True:
                frame = [0.0, 0.0, 0.0]
                self._stack.append(frame)
                started, sent, spilled = time.perf_counter(), self._bytes(), self._spilled()
                try:
                    part = next(parts)
                except StopIteration:
                    break
                finally:
                    elapsed = time.perf_counter() - started
                    self._account(record, frame, elapsed, sent, spilled)
                record["parts"] += 1
                if isinstance(part, pl.DataFrame) and record["rows_out"] is not None:
                    record["rows_out"] += part.height
                else:
                    record["rows_out"] = None
                if isinstance(node, ScanSource | FrameSource):
                    self._hand_out(stage, node, record, part)
                yield part
        except GeneratorExit:  # the consumer stopped early (a slice had its rows): done too
            # It stops right after taking a part it will not use: that part was never read.
            if self._handed and self._handed[-1].stage == stage:
                self._handed.pop()
            self._finish(node, record)
            raise
        self._finish(node, record)

    def _new_record(self, stage: int) -> StageRecord:
        return {
            "stage": stage,
            "rank": self._comm.rank,
            "start": time.time(),
            "end": None,
            "seconds": 0.0,
            "rows_scanned": 0,
            "bytes_scanned": 0,
            "rows_out": 0,
            "bytes_shuffled": 0,
            "bytes_spilled": 0,
            "parts": 0,
        }

    def _account(
        self, record: StageRecord, frame: list[float], elapsed: float, sent: int, spilled: int
    ) -> None:
        """Charge this stage its own time and bytes; its children's are in ``frame``."""
        self._stack.pop()
        moved, to_disk = self._bytes() - sent, self._spilled() - spilled
        record["seconds"] += elapsed - frame[0]
        record["bytes_shuffled"] += moved - int(frame[1])
        record["bytes_spilled"] += to_disk - int(frame[2])
        if self._stack:
            self._stack[-1][0] += elapsed
            self._stack[-1][1] += moved
            self._stack[-1][2] += to_disk

    def _hand_out(
        self, stage: int, node: ScanSource | FrameSource, record: StageRecord, part: Any
    ) -> None:
        """Count a source partition a consumer took: a frame now, a scan once it is read."""
        if isinstance(part, pl.DataFrame):
            record["rows_scanned"] += part.height
            record["bytes_scanned"] += int(part.height * node.bytes_per_row)
            return
        rows = _SLICE_TAIL.search(part) if isinstance(part, str) else None
        if rows is not None:
            self._handed.append(_HandedPart(stage, int(rows[1]), int(rows[2])))

    def scan_read(self, offset: int, length: int, columns: list[str] | None) -> None:
        """Count a scan read polars is about to do: ``length`` rows from ``offset``, ``columns``.

        Matched to the latest handed-out scan partition starting at ``offset``; reads of scans
        that are no partition of ours (inside a single-rank fallback) are not stages.
        """
        for index in range(len(self._handed) - 1, -1, -1):
            handed = self._handed[index]
            if handed.offset == offset and length <= handed.length:
                del self._handed[index]
                record = self._records[handed.stage]
                node = self._nodes[handed.stage]
                assert isinstance(node, ScanSource)
                if handed.stage not in self._column_share:
                    self._column_share[handed.stage] = column_share(node.scan_json)
                share = self._column_share[handed.stage](columns)
                record["rows_scanned"] += length
                record["bytes_scanned"] += int(length * node.bytes_per_row * share)
                return

    def _finish(self, node: PlanNode, record: StageRecord) -> None:
        if record["end"] is not None:
            return
        record["end"] = time.time()
        if isinstance(node, ScanSource):  # partitions whose read was not seen count whole
            stage = record["stage"]
            for handed in [h for h in self._handed if h.stage == stage]:
                record["rows_scanned"] += handed.length
                record["bytes_scanned"] += int(handed.length * node.bytes_per_row)
            self._handed = [h for h in self._handed if h.stage != stage]
        if self._on_done is not None:
            self._on_done(dict(record))

    def records(self) -> tuple[StageRecord, ...]:
        """This rank's records, by stage number (stages that never ran are absent)."""
        return tuple(dict(self._records[stage]) for stage in sorted(self._records))


def _skew(values: Sequence[float]) -> float:
    mean = sum(values) / len(values) if values else 0.0
    return max(values) / mean if mean > 0 else 1.0


@dataclass(frozen=True)
class StageStats:
    """One stage over all ranks."""

    stage: int
    operation: str
    exchange: str | None
    ranks: int
    """Ranks that reported the stage."""
    seconds_max: float
    seconds_mean: float
    rows_scanned: int
    bytes_scanned: int
    rows_out: int | None
    """``None`` when the stage's output stayed lazy (fused into its consumer)."""
    bytes_shuffled: int
    bytes_spilled: int
    """Received shuffle data and grace passes this stage wrote to the workers' local disks
    (memory budget)."""
    time_skew: float
    """Slowest rank's time / mean time (1.0: balanced)."""
    rows_skew: float
    """Largest rank's rows (out, else scanned) / mean rows (1.0: balanced)."""
    fallback: bool

    @classmethod
    def of(cls, stage: int, node: PlanNode, records: Sequence[StageRecord]) -> StageStats:
        """Sum one stage's per-rank records."""
        operation, exchange = describe_stage(node)
        seconds = [r["seconds"] for r in records]
        outs = [r["rows_out"] for r in records]
        rows_out = None if any(o is None for o in outs) else sum(outs)
        rows = outs if rows_out is not None else [r["rows_scanned"] for r in records]
        return cls(
            stage=stage,
            operation=operation,
            exchange=exchange,
            ranks=len(records),
            seconds_max=max(seconds, default=0.0),
            seconds_mean=sum(seconds) / len(seconds) if seconds else 0.0,
            rows_scanned=sum(r["rows_scanned"] for r in records),
            bytes_scanned=sum(r["bytes_scanned"] for r in records),
            rows_out=rows_out,
            bytes_shuffled=sum(r["bytes_shuffled"] for r in records),
            bytes_spilled=sum(r.get("bytes_spilled", 0) for r in records),
            time_skew=_skew(seconds),
            rows_skew=_skew(rows),
            fallback=isinstance(node, SingleRank),
        )


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    >>> format_bytes(1536), format_bytes(3 * 1024**3), format_bytes(12)
    ('1.5 KiB', '3.0 GiB', '12 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


_COLUMNS: Final = (
    ("stage", ">", lambda s: str(s.stage)),
    ("operation", "<", lambda s: s.operation[:44] + (" (fallback)" * s.fallback)),
    ("time max", ">", lambda s: f"{s.seconds_max:.3f} s"),
    ("mean", ">", lambda s: f"{s.seconds_mean:.3f} s"),
    ("skew", ">", lambda s: f"{s.time_skew:.2f}"),
    ("rows scanned", ">", lambda s: f"{s.rows_scanned:,}" if s.rows_scanned else "-"),
    ("scanned", ">", lambda s: format_bytes(s.bytes_scanned) if s.bytes_scanned else "-"),
    ("rows out", ">", lambda s: "lazy" if s.rows_out is None else f"{s.rows_out:,}"),
    ("rows skew", ">", lambda s: f"{s.rows_skew:.2f}"),
    ("shuffled", ">", lambda s: format_bytes(s.bytes_shuffled) if s.bytes_shuffled else "-"),
    ("spilled", ">", lambda s: format_bytes(s.bytes_spilled) if s.bytes_spilled else "-"),
)
"""The table of ``str(stats)``: header, alignment, cell, one row per column."""


@dataclass(frozen=True)
class QueryStats:
    """The numbers of one query (``engine.last_query_stats``); ``print()`` shows a table.

    ``stats["bytes_shuffled"]``, ``stats["fallbacks"]`` (a count) and ``stats["seconds"]`` keep
    reading as they did when the stats were a dict.
    """

    seconds: float
    """Wall time on the client, from submitting the ranks to having their outputs."""
    nranks: int
    stages: tuple[StageStats, ...]
    fallbacks: tuple[str, ...]
    """One line per operation that did not run distributed."""
    records: tuple[StageRecord, ...] = field(repr=False)
    """Every rank's raw record of every stage (the timeline plot reads them)."""

    @classmethod
    def from_records(
        cls,
        plan: DistributedPlan,
        records: Sequence[StageRecord],
        *,
        seconds: float,
        nranks: int,
    ) -> QueryStats:
        """Build the stats from the plan and all ranks' records."""
        by_stage: dict[int, list[StageRecord]] = {}
        for record in records:
            by_stage.setdefault(record["stage"], []).append(record)
        stages = tuple(
            StageStats.of(index, node, by_stage[index])
            for index, node in enumerate(plan_stages(plan))
            if index in by_stage
        )
        return cls(
            seconds=seconds,
            nranks=nranks,
            stages=stages,
            fallbacks=tuple(f.describe() for f in plan.fallbacks),
            records=tuple(records),
        )

    @classmethod
    def of_whole_query(
        cls, operation: str, *, seconds: float, nranks: int, rows_out: int
    ) -> QueryStats:
        """Stats of a query run as one unit by another engine (the device backend).

        Its stages are that engine's own: one row, the wall time on the client and the rows out.
        """
        stage = StageStats(
            stage=0,
            operation=operation,
            exchange=None,
            ranks=nranks,
            seconds_max=seconds,
            seconds_mean=seconds,
            rows_scanned=0,
            bytes_scanned=0,
            rows_out=rows_out,
            bytes_shuffled=0,
            bytes_spilled=0,
            time_skew=1.0,
            rows_skew=1.0,
            fallback=False,
        )
        return cls(seconds=seconds, nranks=nranks, stages=(stage,), fallbacks=(), records=())

    @property
    def bytes_shuffled(self) -> int:
        """Bytes all ranks sent to other ranks."""
        return sum(stage.bytes_shuffled for stage in self.stages)

    @property
    def bytes_spilled(self) -> int:
        """Received shuffle data all ranks spilled to disk."""
        return sum(stage.bytes_spilled for stage in self.stages)

    @property
    def rows_scanned(self) -> int:
        """Input rows read by all ranks."""
        return sum(stage.rows_scanned for stage in self.stages)

    def __getitem__(self, key: str) -> Any:
        if key not in _LEGACY_KEYS:
            raise KeyError(f"{key!r}: QueryStats keys are {', '.join(_LEGACY_KEYS)}")
        return len(self.fallbacks) if key == "fallbacks" else getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON): the totals, one dict per stage, the raw records."""
        return {
            "seconds": self.seconds,
            "nranks": self.nranks,
            "bytes_shuffled": self.bytes_shuffled,
            "bytes_spilled": self.bytes_spilled,
            "rows_scanned": self.rows_scanned,
            "fallbacks": list(self.fallbacks),
            "stages": [asdict(stage) for stage in self.stages],
            "records": [dict(record) for record in self.records],
        }

    def __str__(self) -> str:
        header = (
            f"query: {self.seconds:.3f} s on {self.nranks} ranks, "
            f"{self.rows_scanned:,} rows scanned, {format_bytes(self.bytes_shuffled)} shuffled"
        )
        cells = [[cell(stage) for _, _, cell in _COLUMNS] for stage in self.stages]
        names = [name for name, _, _ in _COLUMNS]
        widths = [max(len(row[i]) for row in [names, *cells]) for i in range(len(names))]
        lines = [header]
        for row in [names, *cells]:
            aligned = (
                f"{text:{align}{width}}"
                for text, (_, align, _), width in zip(row, _COLUMNS, widths, strict=True)
            )
            lines.append("  ".join(aligned).rstrip())
        lines.append("fallbacks: " + ("none" if not self.fallbacks else "; ".join(self.fallbacks)))
        return "\n".join(lines)

    def plot_timeline(self, path: str | Path) -> Path:
        """Write a per-rank timeline of the stages as an image (needs matplotlib)."""
        from engine.profile import plot_timeline

        return plot_timeline(self, path)


def records_of(outputs: Sequence[Any]) -> list[StageRecord]:
    """Every rank's stage records from the ranks' outputs (``RankOutput.stages``)."""
    return [record for output in outputs for record in getattr(output, "stages", ())]


def stage_names(plan: DistributedPlan) -> Mapping[int, str]:
    """Stage number -> operation label (what progress lines print)."""
    return {index: describe_stage(node)[0] for index, node in enumerate(plan_stages(plan))}
