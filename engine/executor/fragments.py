"""Run plan fragments with polars inside a worker: leaf injection and the fragment engine.

A fragment template is polars' own DSL JSON with leaf markers. A file partition fills a marker
with ``Slice(scan)``; a frame already in memory fills it with a tiny Python scan that reads the
frame from this process's registry, so polars still pushes projections and predicates into it.
"""

from __future__ import annotations

import functools
import io
import json
import threading
import uuid
from collections.abc import Iterator

import polars as pl
from polars.io.plugins import register_io_source
from polars.lazyframe.opt_flags import DEFAULT_QUERY_OPT_FLAGS, QueryOptFlags

from engine.plan import dsl
from engine.plan.small_inputs import in_memory_input_bytes

__all__ = ["FragmentRunner", "read_registered_input"]

_INPUTS: dict[str, pl.DataFrame] = {}
_INPUTS_LOCK = threading.Lock()
_PADDED: set[str] = set()
"""Registry keys whose scan returned a column polars did not ask for (see below)."""


def read_registered_input(
    key: str,
    with_columns: list[str] | None,
    predicate: pl.Expr | None,
    n_rows: int | None,
    batch_size: int | None,
) -> Iterator[pl.DataFrame]:
    """Python-scan callback: the registered frame, with the pushed-down work applied."""
    frame = _INPUTS[key]
    if with_columns == [] and frame.width:
        # polars asks for no column when it only needs the row count (a cross join's side
        # under select), but a frame of no columns has no rows: keep one column, and
        # run_template drops it from the result again.
        frame = frame.select(frame.columns[:1])
        with _INPUTS_LOCK:
            _PADDED.add(key)
    elif with_columns is not None:
        frame = frame.select(with_columns)
    if predicate is not None:
        frame = frame.filter(predicate)
    if n_rows is not None:
        frame = frame.head(n_rows)
    yield frame


class FragmentRunner:
    """Builds and collects fragment LazyFrames, each with the polars engine that suits it."""

    def collect(self, lf: pl.LazyFrame, *, over_registered: bool = False) -> pl.DataFrame:
        """Run one fragment: on the streaming engine if it reads files, else in memory.

        Over files the streaming engine reads in morsels on all the worker's threads, with
        memory bounded, as polars' own ``collect()`` does: on 16 cores it ran a rank's TPC-H Q1
        and Q6 at polars' speed, where the in-memory engine took 5x as long (benchmarks/README.md
        "CPU workers"). Over frames already in memory (received shuffle data, registered join
        inputs) it was slower: a group-by with ``n_unique`` of 3M received rows took 0.74 s
        against 0.35 s (TPC-H Q21, 2 ranks, SF1), and joins over the Python scans of registered
        frames slowed down as well.
        """
        if over_registered or in_memory_input_bytes(lf) is not None:
            return lf.collect(engine="in-memory")
        return _streaming_else_in_memory(lf, DEFAULT_QUERY_OPT_FLAGS)

    def run_whole(
        self, query: bytes, streaming: bool, optimizations: tuple[tuple[str, bool], ...]
    ) -> pl.DataFrame:
        """Run a whole query, polars' binary serialization of it, with the user's flags.

        With the streaming engine, or with polars' own choice (``auto``).
        """
        lf = pl.LazyFrame.deserialize(io.BytesIO(query))
        flags = pl.QueryOptFlags(**dict(optimizations))
        if streaming:
            return _streaming_else_in_memory(lf, flags)
        return lf.collect(engine="auto", optimizations=flags)

    def run_template(self, template: str, inputs: list[pl.DataFrame | str]) -> pl.DataFrame:
        """Fill ``template``'s leaves (frames or DSL JSON leaves) and collect it."""
        keys = []
        leaves = []
        try:
            for item in inputs:
                if isinstance(item, str):
                    leaves.append(item)
                    continue
                key = uuid.uuid4().hex
                with _INPUTS_LOCK:
                    _INPUTS[key] = item
                keys.append(key)
                leaves.append(_registered_leaf(key, item.schema))
            lf = dsl.lazyframe_from_dsl(dsl.fill_leaves(template, leaves))
            result = self.collect(lf, over_registered=bool(keys))
            with _INPUTS_LOCK:
                padded = any(key in _PADDED for key in keys)
            return result.select(lf.collect_schema().names()) if padded else result
        finally:
            with _INPUTS_LOCK:
                for key in keys:
                    _INPUTS.pop(key, None)
                    _PADDED.discard(key)

    def lazy(self, leaf: pl.DataFrame | str) -> pl.LazyFrame:
        """A LazyFrame over a frame or a DSL JSON leaf (e.g. a scan slice)."""
        if isinstance(leaf, str):
            return dsl.lazyframe_from_dsl(leaf)
        return leaf.lazy()


def _streaming_else_in_memory(lf: pl.LazyFrame, flags: QueryOptFlags) -> pl.DataFrame:
    """``lf`` on the streaming engine, or in memory where the streaming engine panics.

    A plan it does not implement yet (``with_context``, say) makes it panic while it lowers
    the plan, before any work; polars' own ``engine="auto"`` then uses the in-memory engine,
    and so does this.
    """
    try:
        return lf.collect(engine="streaming", optimizations=flags)
    except pl.exceptions.PanicException:
        return lf.collect(engine="in-memory", optimizations=flags)


def _registered_leaf(key: str, schema: pl.Schema) -> str:
    """DSL JSON of a Python scan that reads registry entry ``key``."""
    source = register_io_source(functools.partial(read_registered_input, key), schema=schema)
    return json.dumps(dsl.serialize_plan(source))
