"""Stand-in of cudf-polars' ``MemoryResourceConfig``: the class and its arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MemoryResourceConfig"]


@dataclass(frozen=True)
class MemoryResourceConfig:
    """Which RMM memory resource each rank creates (``qualname``) and with what ``options``."""

    qualname: str
    options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.qualname.count(".") < 1:
            raise ValueError(f"MemoryResourceConfig.qualname '{self.qualname}' must be qualified")
