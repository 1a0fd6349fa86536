"""pytest plugin: route polars' own unit tests through one ``DaskEngine`` and shadow-check them.

Loaded into a pytest run of *polars'* test suite (``-p polars_hpc_conformance``; see
``tests/conformance/run.py``), the way cudf-polars runs polars' suite on its GPU engine. Every
``LazyFrame.collect()`` that asks for the default engine goes to one ``DaskEngine`` shared by
the whole run, and the same query is then collected with plain polars: the *shadow check*. A
test that asserts little still cannot hide a wrong answer, because each routed collect is
judged against polars itself:

``equal``          the same frame (row order included);
``order``          the same rows in another order (judged by hand: polars may not define it);
``wrong``          another frame, or a frame where polars raised (a hidden error);
``engine_error``   the engine raised where polars answered;
``both_raised``    both raised (``error_type`` says whether ours is polars' own type).

The records (one JSON object per routed collect, plus one per test outcome) go to the file
named by ``--conformance-report``; ``run.py`` summarises them.

The module is named so that it cannot clash with polars' ``tests`` package, which polars'
tests import from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Final

import polars as pl
import pytest
from polars.testing import assert_frame_equal

_ORIGINAL_COLLECT: Final = pl.LazyFrame.collect
_STATE: dict[str, Any] = {"engine": None, "test": None, "records": None}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("polars-hpc conformance")
    group.addoption(
        "--conformance-report",
        default=None,
        help="write one JSON line per routed collect and per test outcome to this file",
    )
    group.addoption(
        "--conformance-workers",
        type=int,
        default=2,
        help="workers of the DaskEngine every collect is routed to (default 2)",
    )
    group.addoption(
        "--conformance-no-route",
        action="store_true",
        help="do not route collects (a plain-polars baseline run that records test outcomes)",
    )


def pytest_configure(config: pytest.Config) -> None:
    report = config.getoption("--conformance-report")
    _STATE["records"] = Path(report).open("w") if report else None  # noqa: SIM115
    if config.getoption("--conformance-no-route"):
        return
    from engine.dask import DaskEngine

    _STATE["engine"] = DaskEngine(
        n_workers=config.getoption("--conformance-workers"),
        engine_options={"fallback_mode": "silent", "progress": False},
    )
    pl.LazyFrame.collect = _routed_collect  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    pl.LazyFrame.collect = _ORIGINAL_COLLECT  # type: ignore[method-assign]
    engine = _STATE.pop("engine", None)
    if engine is not None:
        engine.shutdown()
    records = _STATE.pop("records", None)
    if records is not None:
        records.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    _STATE["test"] = item.nodeid
    try:
        return (yield)
    finally:
        _STATE["test"] = None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        _write(
            {"kind": "test", "test": report.nodeid, "when": report.when, "outcome": report.outcome}
        )


def _write(record: dict[str, Any]) -> None:
    records = _STATE.get("records")
    if records is not None:
        records.write(json.dumps(record, default=str) + "\n")
        records.flush()


def _routed_collect(self: pl.LazyFrame, *args: Any, **kwargs: Any) -> Any:
    """``collect`` on the shared engine for default-engine calls, then the shadow check."""
    engine = _STATE.get("engine")
    plain = kwargs.get("engine", "auto") == "auto" and not kwargs.get("background")
    if engine is None or args or not plain or kwargs.get("post_opt_callback") is not None:
        return _ORIGINAL_COLLECT(self, *args, **kwargs)
    started = time.perf_counter()
    ours, our_error = _attempt(lambda: _ORIGINAL_COLLECT(self, **{**kwargs, "engine": engine}))
    elapsed_s = time.perf_counter() - started
    theirs, their_error = _attempt(lambda: _ORIGINAL_COLLECT(self, **kwargs))
    record = {
        "kind": "collect",
        "test": _STATE.get("test"),
        "seconds": round(elapsed_s, 4),
        "fallbacks": _fallback_reasons(engine),
        **_judge(ours, our_error, theirs, their_error),
    }
    _write(record)
    if our_error is not None:
        raise our_error
    return ours


def _attempt(run: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return run(), None
    except Exception as error:
        return None, error


def _fallback_reasons(engine: Any) -> list[str]:
    from engine.executor.client import last_plan

    plan = last_plan(engine)
    return [] if plan is None else [f"{f.node}: {f.reason}" for f in plan.fallbacks]


def _judge(
    ours: Any, our_error: BaseException | None, theirs: Any, their_error: BaseException | None
) -> dict[str, Any]:
    if our_error is not None and their_error is not None:
        same = type(our_error) is type(their_error)
        return {
            "outcome": "both_raised",
            "error_type": "same" if same else "different",
            "detail": f"ours {_describe(our_error)}; polars {_describe(their_error)}",
        }
    if our_error is not None:
        return {"outcome": "engine_error", "detail": _describe(our_error)}
    if their_error is not None:
        return {"outcome": "wrong", "detail": f"polars raised {_describe(their_error)}"}
    if not isinstance(ours, pl.DataFrame) or not isinstance(theirs, pl.DataFrame):
        return {"outcome": "equal" if type(ours) is type(theirs) else "wrong", "detail": ""}
    try:
        assert_frame_equal(ours, theirs)
    except AssertionError as difference:
        try:
            assert_frame_equal(ours, theirs, check_row_order=False)
        except Exception:
            return {"outcome": "wrong", "detail": _first_line(difference, 400)}
        return {"outcome": "order", "detail": _first_line(difference, 200)}
    except Exception as error:  # frames polars itself cannot compare (objects, ...)
        return {"outcome": "equal" if ours.equals(theirs) else "wrong", "detail": repr(error)}
    return {"outcome": "equal", "detail": ""}


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {_first_line(error, 300)}"


def _first_line(error: BaseException, limit: int) -> str:
    text = " ".join(str(error).split())
    return text[:limit]
