"""Stand-in of cudf-polars' ``DaskEngine``: bootstraps every worker, runs polars on the CPU."""

from __future__ import annotations

import io
import os
import time
from typing import Any

import polars as pl

__all__ = ["DaskEngine", "hold_queries", "refusal_of"]

BOOTSTRAP_ATTRIBUTE = "_cudf_polars_standin"
HOLD_ATTRIBUTE = "_cudf_polars_standin_hold"
HOLD_LIMIT_S = 60.0


def refusal_of(lf: pl.LazyFrame) -> NotImplementedError | None:
    """cudf-polars' translation error for a plan with a Python UDF (it cannot run those)."""
    if "python_udf" not in lf.explain():
        return None
    return NotImplementedError(
        "Query execution with GPU not possible: unsupported operations.\n"
        "The errors were:\n- NotImplementedError: Python UDF (map_elements)"
    )


def _setup(settings: dict[str, Any], dask_worker: Any = None) -> None:
    setattr(dask_worker, BOOTSTRAP_ATTRIBUTE, settings)


def _teardown(dask_worker: Any = None) -> None:
    if hasattr(dask_worker, BOOTSTRAP_ATTRIBUTE):
        delattr(dask_worker, BOOTSTRAP_ATTRIBUTE)


def hold_queries(path: str | None, dask_worker: Any = None) -> None:
    """Test hook: a query waits on this worker while ``path`` exists, as a long GPU query would.

    The worker writes ``<path>.<pid>`` when a query reaches it, so a test knows it is running.
    """
    setattr(dask_worker, HOLD_ATTRIBUTE, path)


def _evaluate(query: bytes, dask_worker: Any = None) -> pl.DataFrame:
    """Run on every worker, in its event loop, as cudf-polars' evaluation is (``Client.run``)."""
    hold = getattr(dask_worker, HOLD_ATTRIBUTE, None)
    if hold is not None:
        with open(f"{hold}.{os.getpid()}", "w"):
            pass
        deadline = time.monotonic() + HOLD_LIMIT_S
        while os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(0.02)
    return pl.LazyFrame.deserialize(io.BytesIO(query)).collect(engine="in-memory")


def bootstrapped(dask_worker: Any = None) -> dict[str, Any] | None:
    """What this worker's bootstrap was given (``None``: none, or torn down)."""
    return getattr(dask_worker, BOOTSTRAP_ATTRIBUTE, None)


class DaskEngine(pl.Engine):
    """Bootstraps each worker of ``dask_client`` and collects with polars in this process."""

    def __init__(
        self,
        *,
        dask_client: Any,
        executor_options: dict[str, Any] | None = None,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.client = dask_client
        self.executor_options = dict(executor_options or {})
        self.engine_options = dict(engine_options or {})
        unknown = set(self.engine_options) - {
            "hardware_binding",
            "memory_resource_config",
            "raise_on_fail",
            "allow_gpu_sharing",
        }
        if unknown:
            raise TypeError(f"Unsupported engine_options: {sorted(unknown)}")
        config = self.engine_options.get("memory_resource_config")
        binding = self.engine_options.get("hardware_binding")
        settings = {
            "memory_resource": None if config is None else config.qualname,
            "binding_enabled": None if binding is None else binding.enabled,
            "executor_options": self.executor_options,
        }
        dask_client.run(_setup, settings)

    @property
    def name(self) -> str:
        """Engine identifier."""
        return "cudf-polars-standin"

    def collect(
        self,
        lf: pl.LazyFrame,
        *,
        optimizations: Any,
        background: bool = False,
        post_opt_callback: Any = None,
    ) -> pl.DataFrame:
        """polars' answer from the first worker, unless the plan holds what cudf-polars refuses.

        Like cudf-polars, every worker evaluates the query through ``Client.run``.
        """
        refusal = refusal_of(lf)
        if refusal is not None:
            raise refusal
        answers = self.client.run(_evaluate, lf.serialize())
        return answers[min(answers)]

    def execute(self, lf: pl.LazyFrame, *, optimizations: Any) -> Any:
        """Not part of what the device backend uses."""
        raise NotImplementedError("the stand-in only collects")

    def shutdown(self) -> None:
        """Tear every worker's bootstrap down."""
        self.client.run(_teardown)
