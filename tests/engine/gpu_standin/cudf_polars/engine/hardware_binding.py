"""Stand-in of cudf-polars' binding policy: only whether it is on."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HardwareBindingPolicy"]


@dataclass(frozen=True)
class HardwareBindingPolicy:
    """cudf-polars binds each worker to its GPU's CPUs unless ``enabled`` is false."""

    enabled: bool = True
