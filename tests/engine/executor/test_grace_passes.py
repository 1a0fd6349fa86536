"""What is over a rank's budget runs in passes (grace hash), before and after the exchange.

Joins, aggregations, distincts and windows split by key hash, sorts by key range; every row
of one key lands in one pass, so the answers are polars' own. A rank over its budget takes
every rank into exchange passes; the spill directory is empty afterwards; and a query whose
input is over a one-rank engine's budget runs in stages instead of as one polars query whose
hash tables could not fit. Ranks are threads with the real rank executor (``on_threads``).
"""

from __future__ import annotations

import gc
import logging
import os

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.executor.exchange import SpillPolicy
from engine.executor.grace import EXCHANGE_PASSES, Spool, in_passes
from engine.executor.loopback import LoopbackCommunicator
from engine.executor.rank import RankExecutor
from engine.plan.planner import plan_on_one_rank

pytestmark = pytest.mark.timeout(120)

ROWS = 30_000


@pytest.fixture
def facts() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "k": [None if i % 997 == 0 else i % 3000 for i in range(ROWS)],
            "v": range(ROWS),
            "s": [i % 7 for i in range(ROWS)],
        }
    )


def _policies(tmp_path, nranks: int, budget: int) -> list[SpillPolicy]:
    return [SpillPolicy(str(tmp_path / f"rank{r}"), budget) for r in range(nranks)]


def _left_behind(tmp_path) -> list[str]:
    return [name for _, _, names in os.walk(tmp_path) for name in names]


def test_each_key_lands_in_one_pass_and_the_files_are_deleted(tmp_path, facts):
    policy = SpillPolicy(str(tmp_path), budget_bytes=facts.estimated_size() // 4)
    keys = [pl.col("k")]
    passes = [
        frame for (frame,) in in_passes([[facts.head(10_000), facts.tail(20_000)]], [keys], policy)
    ]
    assert len(passes) >= 8
    assert sum(frame.height for frame in passes) == ROWS
    seen = [set(frame["k"].to_list()) for frame in passes]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])
    assert policy.spilled_bytes >= facts.estimated_size()
    assert _left_behind(tmp_path) == []


def test_within_the_share_or_without_keys_there_is_one_pass_and_no_file(tmp_path, facts):
    roomy = SpillPolicy(str(tmp_path), budget_bytes=facts.estimated_size() * 2)
    assert len(list(in_passes([[facts]], [[pl.col("k")]], roomy))) == 1
    tight = SpillPolicy(str(tmp_path), budget_bytes=1024)
    assert len(list(in_passes([[facts]], [[]], tight))) == 1
    assert _left_behind(tmp_path) == []


def test_one_hot_key_is_split_no_further_than_the_deepest_level(tmp_path):
    hot = pl.DataFrame({"k": [1] * 20_000, "v": range(20_000)})
    policy = SpillPolicy(str(tmp_path), budget_bytes=4096)
    passes = [frame for (frame,) in in_passes([[hot]], [[pl.col("k")]], policy)]
    assert sum(frame.height for frame in passes) == 20_000
    assert max(frame.height for frame in passes) == 20_000
    assert _left_behind(tmp_path) == []


def test_a_consumer_that_stops_early_leaves_no_file(tmp_path, facts):
    policy = SpillPolicy(str(tmp_path), budget_bytes=facts.estimated_size() // 4)
    passes = in_passes([[facts]], [[pl.col("k")]], policy)
    next(passes)
    passes.close()
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize("nranks", [1, 2])
@pytest.mark.parametrize("how", ["inner", "left", "full", "semi", "anti"])
def test_joins_in_passes_give_polars_answer(on_threads, tmp_path, facts, nranks, how):
    other = facts.select("k", w=pl.col("v") * 2).filter(pl.col("w") % 3 != 0)
    query = facts.lazy().join(other.lazy(), on="k", how=how)
    spills = _policies(tmp_path, nranks, budget=facts.estimated_size() // 8)
    got = on_threads(query, nranks, broadcast_limit=1024, spills=spills)
    assert_frame_equal(got, query.collect(), check_row_order=False)
    assert all(policy.spilled_bytes for policy in spills)
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize("nranks", [1, 2])
def test_aggregations_in_passes_give_polars_answer(on_threads, tmp_path, facts, nranks):
    raw_rows = facts.lazy().group_by("k").agg(pl.col("s").n_unique(), pl.col("v").median())
    partials = facts.lazy().group_by("k", "s").agg(pl.col("v").sum(), pl.len())
    in_order = facts.lazy().group_by("s", maintain_order=True).agg(pl.col("v").max())
    for query in (raw_rows, partials, in_order):
        spills = _policies(tmp_path, nranks, budget=facts.estimated_size() // 8)
        got = on_threads(query, nranks, spills=spills)
        expected = query.collect()
        assert_frame_equal(got, expected, check_row_order=query is in_order)
    assert _left_behind(tmp_path) == []


def test_a_one_rank_query_over_the_budget_runs_in_stages_and_in_passes(tmp_path, facts, caplog):
    other = facts.select("k", w=pl.col("v") * 2)
    query = (
        facts.lazy()
        .join(other.lazy(), on="k")
        .group_by("s")
        .agg(pl.col("w").n_unique(), pl.col("v").sum())
        .sort("s")
    )
    plan = plan_on_one_rank(query)
    policy = SpillPolicy(str(tmp_path), budget_bytes=facts.estimated_size() // 8)
    executor = RankExecutor(
        plan, LoopbackCommunicator(), [], tags=iter(range(1000)).__next__, spill=policy
    )
    with caplog.at_level(logging.INFO, logger="engine.executor.rank"):
        got = pl.concat(executor.run())
    assert_frame_equal(got, query.collect())
    assert "runs in stages" in caplog.text
    assert policy.spilled_bytes > 0
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize(
    ("kind", "shuffles"),
    [
        ("join", 2 * EXCHANGE_PASSES),
        ("raw rows", EXCHANGE_PASSES),
        ("distinct", EXCHANGE_PASSES),
        ("window", EXCHANGE_PASSES + 1),  # and the rows back to their ranks
    ],
)
def test_one_rank_over_its_budget_takes_every_rank_into_exchange_passes(
    on_threads, tmp_path, facts, kind, shuffles
):
    """Rank 0 cannot hold what it sends; rank 1 could, and still splits alike, pass by pass."""
    other = facts.select("k", w=pl.col("v") * 2)
    query = {
        "join": facts.lazy().join(other.lazy(), on="k", how="left"),
        "raw rows": facts.lazy().group_by("k").agg(pl.col("s").n_unique()),
        "distinct": facts.lazy().unique(subset=["k"], keep="last", maintain_order=True),
        "window": facts.lazy().with_columns(m=pl.col("v").min().over("k")),
    }[kind]
    spills = [
        SpillPolicy(str(tmp_path / "rank0"), facts.estimated_size() // 8),
        SpillPolicy(str(tmp_path / "rank1"), facts.estimated_size() * 100),
    ]
    got = on_threads(query, 2, broadcast_limit=1024, spills=spills)
    assert_frame_equal(got, query.collect(), check_row_order=kind in ("distinct", "window"))
    assert len(spills[1].exchanges) == shuffles
    assert spills[1].spilled_bytes == 0
    assert _left_behind(tmp_path) == []


def test_a_spool_dropped_before_its_exchange_leaves_no_file(tmp_path, facts):
    """A collective that failed (a peer died) between spooling and exchanging drops the spool."""
    spool = Spool(SpillPolicy(str(tmp_path), budget_bytes=1024), [pl.col("k")])
    spool.add(facts)
    assert spool.spooled
    assert _left_behind(tmp_path)
    del spool
    gc.collect()
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize("nranks", [1, 2])
def test_distinct_windows_and_sorts_in_passes_give_polars_answer(
    on_threads, tmp_path, facts, nranks
):
    queries = {
        "unique in order": facts.lazy().unique(subset=["k"], keep="first", maintain_order=True),
        "unique": facts.lazy().unique(subset=["k", "s"], keep="first"),
        "window": facts.lazy().with_columns(m=pl.col("v").max().over("k")),
        "sort": facts.lazy().sort("s", "v", descending=[True, False]),
        "stable sort, nulls first": facts.lazy().sort("k", maintain_order=True),
        "sort, nulls last": facts.lazy().sort(
            pl.col("k") % 7, nulls_last=True, maintain_order=True
        ),
    }
    for name, query in queries.items():
        spills = _policies(tmp_path / name, nranks, budget=facts.estimated_size() // 8)
        got = on_threads(query, nranks, spills=spills)
        assert_frame_equal(got, query.collect(), check_row_order=name != "unique")
        assert all(policy.spilled_bytes for policy in spills), name
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize("nranks", [1, 2])
def test_a_sort_over_the_budget_sends_part_by_part(on_threads, tmp_path, facts, nranks):
    """Rank 0's parts go to disk; every rank then sends one part per round (5 each here)."""
    query = facts.lazy().sort(
        "s", "k", descending=[False, True], nulls_last=True, maintain_order=True
    )
    spills = [SpillPolicy(str(tmp_path / "rank0"), facts.estimated_size() // 8)]
    spills.append(SpillPolicy(str(tmp_path / "rank1"), facts.estimated_size() * 100))
    got = on_threads(query, nranks, spills=spills[:nranks], max_rows_per_partition=ROWS // 10)
    assert_frame_equal(got, query.collect())
    assert spills[0].spilled_bytes > 0
    if nranks == 2:
        assert len(spills[1].exchanges) == 5
    assert _left_behind(tmp_path) == []
