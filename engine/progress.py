"""Live progress of a query in the client, and the hand-over of the ranks' stage records.

Channel: each rank sends one tiny Dask *worker event* per finished stage
(``worker.log_event``: queued on the worker's batched stream to the scheduler, which forwards
it to subscribed clients). It costs the rank no round trip and carries ~200 bytes per stage and
rank; the data itself never goes this way. A ``distributed.Queue`` would cost an RPC per put,
and ``Pub``/``Sub`` also routes to clients through the scheduler with more machinery.

The engine's ``collect``/``sink_*`` run inside :func:`observe_query`; the dispatch code asks
:func:`current_observation` for it (a context variable, so concurrent queries in threads keep
their own), registers the query before submitting and hands it the ranks' outputs at the end.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, Final

from engine.stats import QueryStats, StageRecord, format_bytes, records_of, stage_names

if TYPE_CHECKING:
    from distributed import Client

    from engine.plan.nodes import DistributedPlan

__all__ = [
    "PROGRESS_TOPIC",
    "ProgressDisplay",
    "QueryObservation",
    "current_observation",
    "observe_query",
    "progress_wanted",
    "stage_event_sender",
]

PROGRESS_TOPIC: Final = "polars-hpc-progress"
"""Dask event topic of stage completions (one topic: the scheduler keeps a bounded log each)."""

PREFIX: Final = "[polars-hpc]"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"


def progress_wanted(setting: bool | None, stream: IO[str]) -> bool:
    """``StreamingOptions.progress``: ``None`` means on for a terminal or a notebook.

    >>> import io
    >>> progress_wanted(None, io.StringIO()), progress_wanted(True, io.StringIO())
    (False, True)
    """
    if setting is not None:
        return setting
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or _in_notebook()


def stage_event_sender(worker: Any, topic: str | None, query_id: str) -> Any:
    """Worker side: a callable sending one stage record as an event, or ``None`` (no progress)."""
    if topic is None:
        return None

    def send(record: StageRecord) -> None:
        worker.log_event(topic, {"query": query_id, **record})

    return send


class ProgressDisplay:
    r"""Prints stage completions of one query; on a terminal also a live status line.

    Parameters
    ----------
    names
        Stage number -> operation label.
    nranks
        A stage is done when this many ranks reported it.
    stream
        Where to write (``sys.stderr``).
    live
        Redraw one status line with ``\\r`` (a terminal or notebook); else whole lines only.
    """

    def __init__(self, names: dict[int, str], nranks: int, stream: IO[str], *, live: bool) -> None:
        self._names = names
        self._nranks = nranks
        self._stream = stream
        self._live = live
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self._reports: dict[int, list[StageRecord]] = {}
        self._done: set[int] = set()
        self._status_shown = False

    def update(self, record: StageRecord) -> None:
        """Take one rank's record of one stage (called from the client's event loop)."""
        with self._lock:
            reports = self._reports.setdefault(record["stage"], [])
            reports.append(record)
            if len(reports) == self._nranks and record["stage"] not in self._done:
                self._done.add(record["stage"])
                self._write_line(self._stage_line(record["stage"], reports))
            if self._live:
                self._write_status()

    def _stage_line(self, stage: int, reports: Sequence[StageRecord]) -> str:
        parts = [f"stage {stage} done ({len(self._done)}/{len(self._names)})"]
        parts.append(self._names.get(stage, "?"))
        scanned = sum(r["rows_scanned"] for r in reports)
        if scanned:
            volume = format_bytes(sum(r["bytes_scanned"] for r in reports))
            parts.append(f"{scanned:,} rows scanned ({volume})")
        outs = [r["rows_out"] for r in reports]
        if all(o is not None for o in outs):
            parts.append(f"{sum(outs):,} rows out")
        shuffled = sum(r["bytes_shuffled"] for r in reports)
        if shuffled:
            parts.append(f"{format_bytes(shuffled)} shuffled")
        parts.append(f"{max(r['seconds'] for r in reports):.2f} s")
        return f"{PREFIX} " + ", ".join(parts)

    def _write_status(self) -> None:
        records = [r for reports in self._reports.values() for r in reports]
        scanned = sum(r["rows_scanned"] for r in records)
        shuffled = sum(r["bytes_shuffled"] for r in records)
        elapsed = time.perf_counter() - self._started
        self._stream.write(
            f"\r{PREFIX} stages {len(self._done)}/{len(self._names)}, {scanned:,} rows scanned,"
            f" {format_bytes(shuffled)} shuffled, {elapsed:.1f} s\x1b[K"
        )
        self._stream.flush()
        self._status_shown = True

    def _write_line(self, text: str) -> None:
        prefix = "\r\x1b[K" if self._status_shown else ""
        self._stream.write(f"{prefix}{text}\n")
        self._stream.flush()
        self._status_shown = False

    def finish(self, stats: QueryStats | None) -> None:
        """The closing lines: stages still unreported, then totals and wall time.

        Events may arrive after the result; the ranks' outputs are authoritative, so stages
        whose events are still on their way are printed from them.
        """
        with self._lock:
            for stage in [] if stats is None else stats.stages:
                if stage.stage not in self._done:
                    self._done.add(stage.stage)
                    reports = [r for r in stats.records if r["stage"] == stage.stage]
                    self._write_line(self._stage_line(stage.stage, reports))
            if stats is None:
                text = f"{PREFIX} query stopped after {len(self._done)}/{len(self._names)} stages"
            else:
                text = (
                    f"{PREFIX} query done: {len(stats.stages)}/{len(self._names)} stages on "
                    f"{stats.nranks} ranks in {stats.seconds:.2f} s, {stats.rows_scanned:,} rows "
                    f"scanned, {format_bytes(stats.bytes_shuffled)} shuffled"
                )
            self._write_line(text)


class _ProgressHub:
    """One subscription per client; routes events to the display of their query."""

    def __init__(self, client: Client) -> None:
        self.displays: dict[str, ProgressDisplay] = {}
        client.subscribe_topic(PROGRESS_TOPIC, self.handle)

    def handle(self, event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        display = self.displays.get(message.get("query", ""))
        if display is not None:
            display.update(message)


_HUBS: weakref.WeakKeyDictionary[Any, _ProgressHub] = weakref.WeakKeyDictionary()
_HUBS_LOCK = threading.Lock()


def _hub_for(client: Client) -> _ProgressHub:
    with _HUBS_LOCK:
        hub = _HUBS.get(client)
        if hub is None:
            hub = _HUBS[client] = _ProgressHub(client)
        return hub


class QueryObservation:
    """What one ``collect``/``sink_*`` call saw: its plan, timing, the ranks' stage records."""

    def __init__(self, *, progress: bool, stream: IO[str]) -> None:
        self.progress = progress
        self.stream = stream
        self.stats: QueryStats | None = None
        self._plan: DistributedPlan | None = None
        self._nranks = 0
        self._started = 0.0
        self._query_id: str | None = None
        self._hub: _ProgressHub | None = None
        self._display: ProgressDisplay | None = None

    def on_submit(self, client: Client, plan: DistributedPlan, settings: Any) -> Any:
        """Before the ranks are submitted: start the display; the settings the ranks get."""
        self._plan, self._nranks = plan, settings.nranks
        self._started = time.perf_counter()
        if not self.progress:
            return settings
        live = progress_wanted(None, self.stream)
        self._display = ProgressDisplay(stage_names(plan), settings.nranks, self.stream, live=live)
        self._hub, self._query_id = _hub_for(client), settings.query_id
        self._hub.displays[settings.query_id] = self._display
        return dataclasses.replace(settings, progress_topic=PROGRESS_TOPIC)

    def on_outputs(self, outputs: Sequence[Any]) -> None:
        """The ranks' outputs arrived: build the query's :class:`QueryStats`."""
        if self._plan is None:
            return
        self.stats = QueryStats.from_records(
            self._plan,
            records_of(outputs),
            seconds=time.perf_counter() - self._started,
            nranks=self._nranks,
        )

    def close(self) -> None:
        """Stop listening; print the closing line if progress was shown."""
        if self._hub is not None and self._query_id is not None:
            self._hub.displays.pop(self._query_id, None)
        if self._display is not None:
            self._display.finish(self.stats)


_CURRENT: contextvars.ContextVar[QueryObservation | None] = contextvars.ContextVar(
    "polars_hpc_query_observation", default=None
)


def current_observation() -> QueryObservation | None:
    """The observation of the query running in this context, if the engine started one."""
    return _CURRENT.get()


@contextlib.contextmanager
def observe_query(
    progress: bool | None, stream: IO[str] | None = None
) -> Iterator[QueryObservation]:
    """Observe the query run inside the block (progress display and final statistics)."""
    out = sys.stderr if stream is None else stream
    observation = QueryObservation(progress=progress_wanted(progress, out), stream=out)
    token = _CURRENT.set(observation)
    try:
        yield observation
    finally:
        _CURRENT.reset(token)
        observation.close()
