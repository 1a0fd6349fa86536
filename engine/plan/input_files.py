"""Input validation: which input file is at fault when polars rejects a query's inputs.

The client wraps each query in :func:`naming_the_file`; only once polars failed does it read
the scanned files' schemas (from the query's DSL scans) to find the culprit. Needs no executor.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import polars as pl

from engine.plan import dsl

__all__ = ["file_at_fault", "naming_the_file", "schema_difference"]

_FILE_ERRORS: Final = (
    pl.exceptions.ComputeError,
    pl.exceptions.SchemaError,
    pl.exceptions.ColumnNotFoundError,
)
"""Errors polars raises for a bad input file, often without naming the file."""
_MAX_FILES_CHECKED: Final = 1000


@contextlib.contextmanager
def naming_the_file(lf: pl.LazyFrame) -> Iterator[None]:
    """Add a note naming the input file at fault to polars' error, when one is at fault.

    polars says "data type mismatch for column a" or "File out of specification" without the
    file; among thousands that is no help. The error keeps polars' type and message (a note
    is printed below it), and the files are only looked at once the query failed.
    """
    try:
        yield
    except _FILE_ERRORS as error:
        with contextlib.suppress(Exception):
            culprit = file_at_fault(lf)
            if culprit is not None and culprit[0] not in str(error):
                error.add_note(f"DaskEngine: the input file at fault is {culprit[0]}: {culprit[1]}")
        raise


def file_at_fault(lf: pl.LazyFrame) -> tuple[str, str] | None:
    """The first scanned file that polars cannot read or whose schema differs from the first's."""
    for scan in _scans(dsl.serialize_plan(lf)):
        reader = getattr(pl, f"scan_{dsl.scan_format(scan)}", None)
        if reader is None:
            continue
        first: tuple[str, pl.Schema] | None = None
        for path in _expand(dsl.scan_sources(scan))[:_MAX_FILES_CHECKED]:
            try:
                schema = reader(path).collect_schema()
            except pl.exceptions.PolarsError as error:
                return path, f"polars cannot read it ({type(error).__name__}: {error})"
            if first is None:
                first = (path, schema)
                continue
            difference = schema_difference(first[1], schema)
            if difference:
                return path, f"{difference} (compared with the first file, {first[0]})"
    return None


def _scans(tree: Any) -> Iterator[dsl.Node]:
    """Every file ``Scan`` node of a DSL tree."""
    if isinstance(tree, dict):
        body = tree.get("Scan")
        if isinstance(body, dict) and "sources" in body:
            yield tree
        for value in tree.values():
            yield from _scans(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _scans(value)


def _expand(sources: list[str]) -> list[str]:
    """Local files behind paths, globs and directories, in polars' (sorted) order."""
    files: list[str] = []
    for source in sources:
        if glob.has_magic(source):
            files.extend(sorted(glob.glob(source, recursive=True)))
        elif Path(source).is_dir():
            files.extend(sorted(str(p) for p in Path(source).rglob("*") if p.is_file()))
        else:
            files.append(source)
    return files


def schema_difference(first: pl.Schema, other: pl.Schema) -> str:
    """How ``other`` differs from ``first``, in words; empty when it does not."""
    changed = [
        f"column {name!r} is {dtype} here, {first[name]} there"
        for name, dtype in other.items()
        if name in first and first[name] != dtype
    ]
    extra = [name for name in other if name not in first]
    missing = [name for name in first if name not in other]
    if extra:
        changed.append(f"it has column(s) {extra} the first file lacks")
    if missing:
        changed.append(f"it lacks column(s) {missing}")
    return "; ".join(changed)
