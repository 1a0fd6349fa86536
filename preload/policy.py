"""What hardware binding a worker should get; data only, so the nanny side can read it cheaply."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HardwareBindingPolicy"]


@dataclass(frozen=True, kw_only=True)
class HardwareBindingPolicy:
    """Which parts of a worker's hardware binding the engine applies.

    Turn it off (``enabled=False``) where another layer already pins workers, such as
    ``dask_cuda.LocalCUDACluster`` or ``dask-cuda-worker``: two layers pinning one worker make
    the placement depend on which ran last.

    >>> HardwareBindingPolicy(enabled=False).enabled
    False
    """

    enabled: bool = True
    """Apply any binding at all; ``False`` leaves every worker exactly as it was started."""
    cpu: bool = True
    """Pin the worker to the CPUs nearest its GPU (``sched_setaffinity``)."""
    memory: bool = True
    """Prefer the GPU's NUMA node for host memory (``set_mempolicy``) where permitted."""
    network: bool = True
    """Point UCX at the NICs nearest the GPU (``UCX_NET_DEVICES``)."""
    raise_on_fail: bool = False
    """Raise ``preload.worker.BindingError`` (so ``DaskEngine()`` fails) when a worker cannot be
    bound; ``False`` logs a warning with the reason and leaves that worker unbound (never bound
    to another GPU's CPUs or NICs)."""

    def __post_init__(self) -> None:
        for name in ("enabled", "cpu", "memory", "network", "raise_on_fail"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(
                    f"HardwareBindingPolicy.{name} must be a bool, got {value!r} "
                    f"({type(value).__name__})"
                )
