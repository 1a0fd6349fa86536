"""Which backend runs a plan on this rank: the one place that picks.

Two backends, one folder each, neither importing the other:

- ``cpu``: our executor (:mod:`engine.executor`): :class:`~engine.executor.rank.RankExecutor`
  collects each fragment with polars' in-memory engine and reports what it read to the stats.
- ``gpu``: the GPU backend (:mod:`engine.gpu`): today the same plan walk with every fragment
  collected by cudf-polars; the device-resident backend of issue 14 will be chosen here too.

Both get the same communicator, tags, spill policy and stage recorder from dispatch
(:func:`engine.executor.dispatch.run_rank`), and dispatch turns what they stream into results or
sink parts, so results, sinks, stats and progress are shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal, Protocol

import polars as pl

from engine.executor.fragments import FragmentRunner
from engine.executor.rank import RankExecutor
from engine.executor.reads import ReadObservingRunner
from engine.gpu.fragments import gpu_fragment_engine, gpu_ready

if TYPE_CHECKING:
    from engine.comm.base import Communicator
    from engine.executor.exchange import SpillPolicy
    from engine.executor.rank import Part, PartitionLimits
    from engine.plan.nodes import DistributedPlan, PlanNode
    from engine.stats import StageRecorder

__all__ = ["Backend", "RankBackend", "choose_backend", "rank_backend"]

Backend = Literal["cpu", "gpu"]


class RankBackend(Protocol):
    """What dispatch asks of a backend on one rank."""

    def run(self) -> list[pl.DataFrame]:
        """This rank's part of the result, in order."""
        ...

    def stream(self, node: PlanNode) -> Iterator[Part]:
        """Partitions of ``node`` on this rank, in order (sinks write them one by one)."""
        ...

    def lazy(self, part: Part) -> pl.LazyFrame:
        """A LazyFrame over a partition (a sink writes it)."""
        ...


_FRAGMENT_RUNNERS: Final[dict[Backend, Callable[[StageRecorder], FragmentRunner]]] = {
    # CPU fragments report what they read (rows and columns after pushdown) to the stats.
    "cpu": ReadObservingRunner,
    # GPU fragments keep cudf-polars' own callback: their scans count whole.
    "gpu": lambda _stages: FragmentRunner(gpu_fragment_engine()),
}


def choose_backend(
    setting: Literal["auto", "cpu", "gpu"], environ: Mapping[str, str] | None = None
) -> Backend:
    """``gpu`` when asked or (``auto``) when this worker owns a GPU and cudf-polars imports."""
    ready = gpu_ready(os.environ if environ is None else environ)
    if setting == "gpu" and not ready:
        raise RuntimeError(
            "StreamingOptions.fragment_engine='gpu' needs a GPU (CUDA_VISIBLE_DEVICES) and "
            "cudf-polars (pip install 'polars-hpc[gpu]'); use fragment_engine='cpu' or 'auto'"
        )
    return "gpu" if setting == "gpu" or (setting == "auto" and ready) else "cpu"


def rank_backend(
    backend: Backend,
    plan: DistributedPlan,
    comm: Communicator,
    frames: Sequence[pl.DataFrame],
    tags: Callable[[], int],
    limits: PartitionLimits,
    spill: SpillPolicy,
    stages: StageRecorder,
) -> RankBackend:
    """The chosen backend, ready to run ``plan`` on this rank."""
    runner = _FRAGMENT_RUNNERS[backend](stages)
    return RankExecutor(plan, comm, frames, tags, limits, runner, spill, stages)
