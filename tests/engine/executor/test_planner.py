"""The pure planner: polars' DSL in, a printable, picklable plan of stages out."""

from __future__ import annotations

import json
import pickle
import tomllib
from pathlib import Path

import polars as pl
import pytest
from packaging.requirements import Requirement

from engine.plan import dsl, dsl_exprs, format_plan, plan_lazyframe
from engine.plan.nodes import Aggregate, Join, RowWise, ScanSource
from engine.plan.pruning import prune_columns

pytestmark = pytest.mark.timeout(60)

PYPROJECT = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def test_running_polars_is_in_the_supported_range():
    """The installed polars is accepted, and the planner's range is the package's pin.

    Each version either side of the bounds is refused with the message naming the fix.
    """
    (pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("polars")]
    supported = Requirement(pin).specifier
    assert supported.contains(pl.__version__), (pl.__version__, pin)
    dsl.check_polars_version()
    for version in ("1.44.0", "1.44.1", "1.44.2", "1.44.99", "1.45.0", "1.45.1", "2.0.0"):
        if supported.contains(version):
            dsl.check_polars_version(version)
        else:
            with pytest.raises(RuntimeError, match=rf"polars {version} .* install polars>="):
                dsl.check_polars_version(version)


@pytest.fixture
def scan(tmp_path) -> pl.LazyFrame:
    pl.DataFrame(
        {"a": [1, 2, 3], "b": ["x", "y", "x"], "c": [1.0, 2.0, 3.0], "d": [0, 0, 1]}
    ).write_parquet(tmp_path / "t.parquet")
    return pl.scan_parquet(tmp_path / "t.parquet")


def test_plan_is_plain_data(scan):
    plan = plan_lazyframe(scan.filter(pl.col("a") > 1).group_by("b").agg(pl.col("c").mean()))
    assert pickle.loads(pickle.dumps(plan)) == plan
    assert isinstance(plan.root, Aggregate)
    assert plan.root.outputs is not None
    assert isinstance(plan.root.input, RowWise)
    assert plan.root.input.operations == ("Select", "Filter", "Select")
    assert isinstance(plan.root.input.input, ScanSource)
    assert plan.root.input.input.total_rows == 3
    assert "Aggregate(input=RowWise" in repr(plan)


def test_explain_golden(scan, tmp_path):
    dims = pl.LazyFrame({"b": ["x", "y"], "name": ["ex", "why"]})
    lf = scan.join(dims, on="b").group_by("name").agg(pl.len()).sort("name").head(1)
    text = format_plan(plan_lazyframe(lf, broadcast_limit=1 << 20), 2)
    path = tmp_path / "t.parquet"
    assert text == "\n".join(
        [
            "distributed plan on 2 ranks",
            "  TopK <- exchange: local top-k per rank, merge on rank 0",
            "    Aggregate (partial+final) <- exchange: hash shuffle on ['name']",
            "      Join inner (broadcast_right) then Select <- exchange: allgather the right side",
            "        RowWise [Select]",
            f"          ScanSource parquet ['{path}']: 3 rows, split into contiguous row ranges",
            "        FrameSource #0: 2 rows, split into row ranges",
            "fallbacks: none",
        ]
    )


@pytest.mark.parametrize(
    ("expr", "elementwise"),
    [
        (pl.col("a") + 1, True),
        (pl.col("b").str.to_uppercase(), True),
        (pl.when(pl.col("a") > 1).then(1).otherwise(None), True),
        (pl.col("a").is_in([1, 2]), True),
        (pl.col("a").is_in(pl.col("d")), False),
        (pl.col("a").cum_sum(), False),
        (pl.col("a").shift(), False),
        (pl.col("a").sum().over("b"), False),
        (pl.col("a") - pl.col("a").mean(), False),
        (pl.col("a").map_elements(lambda x: x, pl.Int64), True),
        (pl.col("a").map_batches(lambda s: s, pl.Int64), False),
        (pl.lit(pl.Series([1, 2])), False),
    ],
)
def test_elementwise_classification(expr, elementwise):
    import json

    assert dsl_exprs.is_elementwise(json.loads(expr.meta.serialize(format="json"))) is elementwise


@pytest.mark.parametrize(
    ("expr", "decomposes"),
    [
        (pl.col("a").sum(), True),
        ((pl.col("a").sum() * 100 / pl.len()).alias("x"), True),
        (pl.col("c").mean(), True),
        (pl.col("a").first(), True),
        (pl.col("a").median(), False),
        (pl.col("a").n_unique(), False),
        (pl.col("a") + pl.col("a").sum(), False),
        (pl.col("a").cum_sum().sum(), False),
    ],
)
def test_aggregation_decomposition(expr, decomposes):
    import json

    found = dsl_exprs.decompose_agg(json.loads(expr.meta.serialize(format="json")), "_t")
    assert (found is not None) is decomposes


def test_pruning_keeps_only_needed_columns_across_a_join(scan):
    other = pl.LazyFrame({"a": [1, 2], "e": [5, 6], "f": [7, 8]})
    lf = scan.join(other, on="a").select("b", "e")
    tree, frames = dsl.serialize_plan_and_frames(lf)
    pruned = prune_columns(tree)
    assert dsl.lazyframe_from_dsl(frames.to_json(pruned)).collect().equals(lf.collect())
    join = dsl.node_inputs(pruned)[0]
    while dsl.node_kind(join) == "Select":
        join = dsl.node_inputs(join)[0]
    assert dsl.node_kind(join) == "Join"
    left, right = dsl.node_inputs(join)
    assert dsl.lazyframe_from_dsl(left).collect_schema().names() == ["a", "b"]
    assert dsl.lazyframe_from_dsl(right).collect_schema().names() == ["a", "e"]


def test_join_strategy_follows_broadcast_limit(scan):
    lf = scan.join(pl.LazyFrame({"a": [1], "z": [0]}), on="a")
    assert plan_lazyframe(lf, broadcast_limit=1 << 20).root.strategy == "broadcast_right"
    shuffled = plan_lazyframe(lf, broadcast_limit=1).root
    assert isinstance(shuffled, Join)
    assert shuffled.strategy == "shuffle"
    validated = scan.join(pl.LazyFrame({"a": [1]}), on="a", validate="m:1")
    assert plan_lazyframe(validated, broadcast_limit=1 << 20).root.strategy == "shuffle"


def test_in_memory_frames_are_cut_out_of_the_plan_and_put_back_for_polars():
    """A 1 MiB frame must not become a million JSON numbers for the planner to walk."""
    big = pl.DataFrame({"a": range(1 << 17), "b": 1.5})
    small = pl.DataFrame({"a": [1, 2], "c": ["x", "y"]})
    lf = big.lazy().join(small.lazy(), on="a").with_context(small.lazy().select(d="c"))
    tree, frames = dsl.serialize_plan_and_frames(lf)
    assert len(json.dumps(tree)) < 20_000  # the 1 MiB frame alone would be ~4 million characters
    assert len(frames.arrays) == 3
    assert dsl.lazyframe_from_dsl(tree).collect_schema() == lf.collect_schema()
    assert dsl.lazyframe_from_dsl(frames.to_json(tree)).collect().equals(lf.collect())
