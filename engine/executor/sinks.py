"""Distributed sinks: each rank writes its partitions as ``<dir>/part.<rank>.<i>.<ext>``.

Which of polars' sink arguments are forwarded to every part file is a table (one row per
format); arguments that have no meaning for a directory of parts must keep their defaults.

Nothing under a final name is ever incomplete: ranks write into a staging directory inside the
target (``<dir>/.polars-hpc-staging-<id>/``), and only when every rank succeeded does the
client move the parts to their final names (:func:`commit_sink`). A failed sink (a full disk,
a rank that died) removes the staging directory (:func:`abandon_sink`) and leaves the target
empty, never a part of the result that looks whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl

__all__ = [
    "SINK_EXTENSIONS",
    "SinkRequest",
    "abandon_sink",
    "commit_sink",
    "prepare_sink_directory",
    "sink_request",
    "staged_sink",
    "write_part",
]

SinkFormat = Literal["parquet", "ipc", "csv", "ndjson"]

SINK_EXTENSIONS: Final[dict[str, str]] = {
    "parquet": "parquet",
    "ipc": "arrow",
    "csv": "csv",
    "ndjson": "ndjson",
}

_FORWARDED: Final[dict[str, frozenset[str]]] = {
    "parquet": frozenset(
        {"compression", "compression_level", "statistics", "row_group_size", "data_page_size"}
    ),
    "ipc": frozenset({"compression", "compat_level", "record_batch_size"}),
    "csv": frozenset(
        {
            "include_bom",
            "compression",
            "compression_level",
            "check_extension",
            "include_header",
            "separator",
            "line_terminator",
            "quote_char",
            "batch_size",
            "datetime_format",
            "date_format",
            "time_format",
            "float_scientific",
            "float_precision",
            "decimal_comma",
            "null_value",
            "quote_style",
        }
    ),
    "ndjson": frozenset({"compression", "compression_level", "check_extension"}),
}

# Arguments accepted only at these values (anything else raises, naming the argument).
_REQUIRED_DEFAULTS: Final[dict[str, tuple[object, ...]]] = {
    "retries": (None,),
    "sync_on_close": (None,),
    "metadata": (None,),
    "arrow_schema": (None,),
    "sinked_paths_callback": (None,),
    "credential_provider": (None, "auto"),
    "lazy": (False,),
    "_record_batch_statistics": (False,),
}
_IGNORED: Final = frozenset({"maintain_order", "mkdir", "optimizations", "storage_options"})

_OS_ERROR: Final = re.compile(r"\(os error (\d+)\)")
_WRITE_ERRNOS: Final = frozenset(
    {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO}
)

OVERWRITE_OPTION: Final = "overwrite"
"""``storage_options={"overwrite": True}`` lets a sink replace a non-empty target directory."""


@dataclass(frozen=True)
class SinkRequest:
    """What every rank writes: format, target directory, per-file polars arguments."""

    file_format: SinkFormat
    directory: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    staging: str | None = None
    """Directory the parts are written to before :func:`commit_sink` moves them."""


def sink_request(file_format: SinkFormat, path: object, kwargs: Mapping[str, Any]) -> SinkRequest:
    """Check polars' sink arguments and keep the ones each part file needs."""
    if not isinstance(path, str | Path):
        raise TypeError(
            f"DaskEngine.sink_{file_format} writes a directory of part files and needs a path, "
            f"got {type(path).__name__}; pass a directory path such as 'out/'"
        )
    for name, allowed in _REQUIRED_DEFAULTS.items():
        if name in kwargs and kwargs[name] not in allowed:
            raise NotImplementedError(
                f"DaskEngine.sink_{file_format} does not support {name}={kwargs[name]!r}; "
                f"leave it at {allowed[0]!r}, or use engine='streaming' for a single file"
            )
    storage = dict(kwargs.get("storage_options") or {})
    overwrite = bool(storage.pop(OVERWRITE_OPTION, False))
    if storage:
        raise NotImplementedError(
            f"DaskEngine.sink_{file_format} writes local/shared-filesystem paths only; "
            f"storage_options {sorted(storage)} are not supported"
        )
    forwarded = _FORWARDED[file_format]
    unknown = set(kwargs) - forwarded - set(_REQUIRED_DEFAULTS) - _IGNORED
    if unknown:
        raise TypeError(f"DaskEngine.sink_{file_format} got unknown arguments {sorted(unknown)}")
    arguments = {k: v for k, v in kwargs.items() if k in forwarded}
    return SinkRequest(file_format, str(path), arguments, overwrite)


def prepare_sink_directory(request: SinkRequest) -> SinkRequest:
    """Create the target and a staging directory in it; the request, naming the staging one.

    A non-empty target is an error unless ``overwrite`` is asked; a target this user cannot
    write to is an error here, before any rank computes its part.
    """
    directory = Path(request.directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(
            f"sink target {directory} is a file; DaskEngine writes a directory of part files"
        )
    if directory.is_dir() and any(directory.iterdir()):
        if not request.overwrite:
            raise FileExistsError(
                f"sink target directory {directory} is not empty; remove it, choose another "
                f"path, or pass storage_options={{'{OVERWRITE_OPTION}': True}} to replace it"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(
            f"sink target directory {directory} is not writable by this user (permissions, or "
            "a read-only filesystem); choose a directory you can write to"
        )
    staging = directory / f".polars-hpc-staging-{uuid.uuid4().hex}"
    staging.mkdir()
    return dataclasses.replace(request, staging=str(staging))


def part_path(request: SinkRequest, rank: int, index: int) -> Path:
    """``<dir>/part.<rank>.<index>.<ext>``."""
    extension = SINK_EXTENSIONS[request.file_format]
    return Path(request.directory) / f"part.{rank}.{index}.{extension}"


def write_part(request: SinkRequest, lf: pl.LazyFrame, rank: int, index: int) -> str:
    """Stream one partition to its staged part file with polars; return the path written.

    A failed write (``File too large``, ``No space left on device``) keeps polars' error and
    gains a note naming the rank and the file, so the client's error says where it happened.
    """
    final = part_path(request, rank, index)
    target = Path(request.staging) / final.name if request.staging else final
    sink = getattr(lf, f"sink_{request.file_format}")
    try:
        sink(target, **request.arguments)
    except Exception as error:
        if _is_write_error(error):
            error.add_note(
                f"DaskEngine: rank {rank} failed writing {final} (staged as {target}); nothing "
                f"under {request.directory} claims to be complete. A full disk or a file size "
                "limit (ulimit -f) reads 'No space left on device' or 'File too large'"
            )
        raise
    return str(target)


def _is_write_error(error: Exception) -> bool:
    """A failure of the write itself (space, size limit, permission), not of the query.

    polars raises ``OSError`` from its CSV/IPC writers and ``ComputeError`` from its parquet
    writer, both with the OS error only as text ("File too large (os error 27)").
    """
    code = getattr(error, "errno", None)
    match = _OS_ERROR.search(str(error))
    if match is not None:
        code = int(match.group(1))
    return code in _WRITE_ERRNOS


def commit_sink(request: SinkRequest, staged: Sequence[str]) -> list[str]:
    """Every rank succeeded: move the staged parts to their final names; return those."""
    final = []
    for path in staged:
        target = Path(request.directory) / Path(path).name
        os.replace(path, target)
        final.append(str(target))
    abandon_sink(request)
    return final


@contextlib.contextmanager
def staged_sink(request: SinkRequest) -> Iterator[tuple[SinkRequest, list[str]]]:
    """The two-phase sink around the block: ``(request naming its staging directory, staged)``.

    The block writes its parts (:func:`write_part`) and lists their paths in ``staged``; when
    it returns they are committed, when it raises the staging directory is removed.
    """
    staging = prepare_sink_directory(request)
    staged: list[str] = []
    try:
        yield staging, staged
    except BaseException:
        abandon_sink(staging)
        raise
    commit_sink(staging, staged)


def abandon_sink(request: SinkRequest) -> None:
    """Remove the staging directory and whatever a failed sink left in it."""
    if request.staging is not None:
        shutil.rmtree(request.staging, ignore_errors=True)
