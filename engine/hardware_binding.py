"""Hardware binding policy of :class:`engine.dask.DaskEngine` (the user guide's import path)."""

from preload.policy import HardwareBindingPolicy

__all__ = ["HardwareBindingPolicy"]
