"""pytest plugin: route polars' own unit tests through one ``DaskEngine`` and shadow-check them.

Loaded into a pytest run of *polars'* test suite (``-p polars_hpc_conformance``; see
``tests/conformance/run.py``), the way cudf-polars runs polars' suite on its GPU engine. Every
``LazyFrame.collect()`` that asks for the default engine goes to one ``DaskEngine`` shared by
the whole run, and the same query is then collected with plain polars: the *shadow check*. A
test that asserts little still cannot hide a wrong answer, because each routed collect is
judged against polars itself:

``equal``          the same frame (row order included);
``order``          the same rows (or, under ``col.unique()``, the same values per column) in
                   another order, where the plan leaves the order open (group_by, unique,
                   join or sort without ``maintain_order``), or other rows of the same shape
                   where a slice picks from such an open order (``unique().tail(1)``);
``wrong``          another frame, the same rows in another order where polars defines the
                   order, or a frame where polars raised (a hidden error);
``nondeterministic`` polars itself answered differently when asked twice (random sampling);
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
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Final

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.plan.dsl import serialize_plan, walk_exprs

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
        # polars' tests use frames of a few rows: all of them must run on the ranks.
        engine_options={"fallback_mode": "silent", "progress": False, "client_fast_path_bytes": 0},
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
    fallbacks = _fallback_reasons(engine)
    verdict = _judge(ours, our_error, theirs, their_error)
    if verdict["outcome"] in ("wrong", "order") and their_error is None:
        verdict = _judge_open_order(self, verdict, ours, theirs, kwargs)
    record = {
        "kind": "collect",
        "test": _STATE.get("test"),
        "seconds": round(elapsed_s, 4),
        "fallbacks": fallbacks,
        **verdict,
    }
    _write(record)
    if our_error is not None:
        raise our_error
    return ours


def _judge_open_order(
    lf: pl.LazyFrame, verdict: dict[str, Any], ours: Any, theirs: Any, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """A different answer is ``nondeterministic`` when polars itself answers differently
    again, and ``order`` only where polars leaves the order open; else ``wrong``."""
    again, _ = _attempt(lambda: _ORIGINAL_COLLECT(lf, **kwargs))
    if not _same(theirs, again):
        return {"outcome": "nondeterministic", "detail": verdict["detail"]}
    if verdict["outcome"] == "order" and not _same_in_order(theirs, again):
        return {"outcome": "order", "detail": "polars' own row order changes between runs"}
    tree = _plan_tree(lf)
    column_unique = tree is not None and _has_unordered_column_unique(tree)
    if verdict["outcome"] == "wrong" and column_unique and _each_column_same_values(ours, theirs):
        return {"outcome": "order", "detail": "unique() of a column leaves its order open"}
    undefined_by = "a plan polars cannot serialize" if tree is None else _order_undefined_by(tree)
    if verdict["outcome"] == "wrong" and undefined_by and _same_rows_and_lists(ours, theirs):
        return {
            "outcome": "order",
            "detail": f"lists gather rows of an open order ({undefined_by})",
        }
    if verdict["outcome"] == "wrong" and undefined_by and _observes_order(tree):
        detail = f"an order-sensitive expression over an open order ({undefined_by})"
        return {"outcome": "order", "detail": detail}
    if (
        verdict["outcome"] == "wrong"
        and undefined_by
        and _slices(tree)
        and _same_shape(ours, theirs)
    ):
        return {
            "outcome": "order",
            "detail": f"a slice picks rows of an open order ({undefined_by})",
        }
    if verdict["outcome"] != "order":
        return verdict
    if undefined_by is None:
        return {"outcome": "wrong", "detail": "row order: " + verdict["detail"]}
    return {"outcome": "order", "detail": f"polars leaves the order open ({undefined_by})"}


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


def _same(first: Any, second: Any) -> bool:
    """Whether two answers of polars hold the same rows (else: a nondeterministic query).

    Row order is not compared: an unordered group_by comes back in another order each time,
    and its wrong values must still count as wrong, not as nondeterministic.
    """
    if isinstance(first, pl.DataFrame) and isinstance(second, pl.DataFrame):
        try:
            assert_frame_equal(first, second, check_row_order=False)
        except Exception:
            return _same_rows_and_lists(first, second)
        return True
    return type(first) is type(second)


_UNORDERED_JOIN: Final = ("None", "none", None)


def _order_undefined_by(tree: Any) -> str | None:
    """The plan node for which polars leaves the row order open, if any.

    ``group_by`` and ``unique`` without ``maintain_order``, joins without ``maintain_order``
    (and full joins ordered by one side only) and sorts without ``maintain_order`` (ties) do
    not define the order of their output.
    """
    for node in _walk(tree):
        reason = _leaves_order_open(node)
        if reason is not None:
            return reason
    return None


def _leaves_order_open(node: dict[str, Any]) -> str | None:
    """Why this plan node leaves the order of its output open, or ``None``."""
    if "GroupBy" in node and not node["GroupBy"].get("maintain_order", True):
        return "group_by"
    if "Distinct" in node and not node["Distinct"]["options"].get("maintain_order", True):
        return "unique"
    if "Join" in node:
        args = node["Join"]["options"]["args"]
        if args.get("maintain_order") in _UNORDERED_JOIN:
            return "join"
        if args.get("how") == "Full" and args.get("maintain_order") in ("Left", "Right"):
            # polars orders one side; the other side's unmatched rows come in hash order,
            # which differs between processes (random hash seeds)
            return "the unordered side's unmatched rows of a full join"
    function = node.get("function")
    if isinstance(function, dict) and not function.get("ValueCounts", {"sort": True})["sort"]:
        return "value_counts"
    options = node["Sort"].get("sort_options", {}) if isinstance(node.get("Sort"), dict) else {}
    if options and not options.get("maintain_order", True):
        return "sort ties"
    return None


def _same_in_order(first: Any, second: Any) -> bool:
    try:
        assert_frame_equal(first, second)
    except Exception:
        return False
    return True


def _same_rows_and_lists(ours: Any, theirs: Any) -> bool:
    """Equal up to row order and the order inside list columns (``agg(pl.col("b"))`` of rows
    that arrive in an open order)."""
    if not _same_shape(ours, theirs):
        return False
    lists = [name for name, dtype in ours.schema.items() if isinstance(dtype, pl.List)]
    if not lists:
        return False
    try:
        assert_frame_equal(
            ours.with_columns(pl.col(lists).list.sort()),
            theirs.with_columns(pl.col(lists).list.sort()),
            check_row_order=False,
        )
    except Exception:
        return False
    return True


_ORDER_SENSITIVE: Final = frozenset(
    {"Sort", "SortBy", "CumSum", "CumCount", "CumMin", "CumMax", "CumProd", "Shift", "Gather"}
    | {"First", "Last", "Implode", "RowIndex", "AnonymousFunction", "Diff", "Rank"}
)


_PLAN_INPUTS: Final = ("input", "input_left", "input_right", "inputs")


def _observes_order(tree: Any) -> bool:
    """Whether an expression above a node that leaves the order open computes something from
    the order of rows (``a.sort() + a``, ``first()``, a Python function over a column): then
    polars' own answer is one of several."""
    return _order_observed_above_open(tree, above=False)


def _order_observed_above_open(node: Any, *, above: bool) -> bool:
    if not isinstance(node, dict) or len(node) != 1:
        return False
    ((kind, body),) = node.items()
    if not isinstance(body, dict):
        return False
    if above and _leaves_order_open({kind: body}):
        return True
    own = {key: value for key, value in body.items() if key not in _PLAN_INPUTS}
    sensitive = above or any(
        any(key in _ORDER_SENSITIVE for key in sub)
        or (isinstance(sub.get("function"), str) and sub["function"] in _ORDER_SENSITIVE)
        for sub in _walk(own)
    )
    children = [body[key] for key in _PLAN_INPUTS if key in body]
    flat = [c for child in children for c in (child if isinstance(child, list) else [child])]
    return any(_order_observed_above_open(child, above=sensitive) for child in flat)


def _slices(tree: Any) -> bool:
    """Whether the plan takes a slice (``head``, ``tail``, ``slice``) of its rows."""
    return any("Slice" in node for node in _walk(tree))


def _same_shape(ours: Any, theirs: Any) -> bool:
    frames = isinstance(ours, pl.DataFrame) and isinstance(theirs, pl.DataFrame)
    return frames and ours.schema == theirs.schema and ours.height == theirs.height


def _plan_tree(lf: pl.LazyFrame) -> Any | None:
    """The plan as the engine's planner reads it (``None``: polars cannot serialize it)."""
    try:
        return serialize_plan(lf)
    except Exception:
        return None


def _has_unordered_column_unique(tree: Any) -> bool:
    """Whether an expression calls ``unique()`` without ``maintain_order`` (each column's own
    order is open, so rows are not kept together)."""
    return any(node.get("function") == {"Unique": False} for node in _walk(tree))


def _each_column_same_values(ours: Any, theirs: Any) -> bool:
    """Whether every column holds the same values, each in its own order (``col.unique()``)."""
    if not isinstance(ours, pl.DataFrame) or not isinstance(theirs, pl.DataFrame):
        return False
    if ours.schema != theirs.schema or ours.height != theirs.height:
        return False
    try:
        return all(ours[c].sort().equals(theirs[c].sort()) for c in ours.columns)
    except Exception:  # unsortable dtypes
        return False


def _walk(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object of a plan's JSON tree (nodes, expressions, options), parents first."""
    return (sub for sub in walk_exprs(tree) if isinstance(sub, dict))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {_first_line(error, 300)}"


def _first_line(error: BaseException, limit: int) -> str:
    text = " ".join(str(error).split())
    return text[:limit]
