"""Distributed sinks: each rank writes its partitions as ``<dir>/part.<rank>.<i>.<ext>``.

Which of polars' sink arguments are forwarded to every part file is a table (one row per
format); arguments that have no meaning for a directory of parts must keep their defaults.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl

__all__ = ["SINK_EXTENSIONS", "SinkRequest", "prepare_sink_directory", "sink_request", "write_part"]

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

OVERWRITE_OPTION: Final = "overwrite"
"""``storage_options={"overwrite": True}`` lets a sink replace a non-empty target directory."""


@dataclass(frozen=True)
class SinkRequest:
    """What every rank writes: format, target directory, per-file polars arguments."""

    file_format: SinkFormat
    directory: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    overwrite: bool = False


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


def prepare_sink_directory(request: SinkRequest) -> None:
    """Create the target directory; a non-empty one is an error unless ``overwrite`` is asked."""
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


def part_path(request: SinkRequest, rank: int, index: int) -> Path:
    """``<dir>/part.<rank>.<index>.<ext>``."""
    extension = SINK_EXTENSIONS[request.file_format]
    return Path(request.directory) / f"part.{rank}.{index}.{extension}"


def write_part(request: SinkRequest, lf: pl.LazyFrame, rank: int, index: int) -> str:
    """Stream one partition to its part file with polars; return the path written."""
    target = part_path(request, rank, index)
    sink = getattr(lf, f"sink_{request.file_format}")
    sink(target, **request.arguments)
    return str(target)
