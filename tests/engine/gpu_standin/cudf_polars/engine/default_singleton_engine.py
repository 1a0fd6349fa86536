"""Stand-in of the default ``engine="gpu"`` singleton: counts its shutdowns."""

from __future__ import annotations

__all__ = ["DefaultSingletonEngine"]


class DefaultSingletonEngine:
    """cudf-polars refuses a streaming engine while this singleton lives."""

    shutdowns = 0

    @staticmethod
    def shutdown() -> None:
        """Shut down the singleton, if any (idempotent)."""
        DefaultSingletonEngine.shutdowns += 1
