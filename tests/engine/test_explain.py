"""``engine.explain``: text, Graphviz dot, images; one table row per plan node type."""

from __future__ import annotations

import re
import shutil
import typing

import polars as pl
import pytest

from engine.dask import DaskEngine
from engine.plan import plan_lazyframe
from engine.plan.explain import STAGE_KINDS, format_dot, plan_stages
from engine.plan.nodes import PlanNode

pytestmark = pytest.mark.timeout(120)

NODE = re.compile(
    r'^  (s\d+) \[label="((?:[^"\\]|\\.)*)"(, style=filled, fillcolor="#[0-9a-f]+")?\];$'
)
EDGE = re.compile(r"^  (s\d+) -> (s\d+);$")


@pytest.fixture(scope="module")
def engine(dask_client_of_size):
    with DaskEngine(
        dask_client=dask_client_of_size(2), engine_options={"fallback_mode": "silent"}
    ) as engine:
        yield engine


def _query() -> pl.LazyFrame:
    left = pl.LazyFrame({"k": [1, 2, 3, 4], "v": [1.0, 2.0, 3.0, 4.0]})
    right = pl.LazyFrame({"k": [1, 2], "name": ["a", "b"]})
    joined = left.join(right, on="k").with_columns(pl.col("v").cum_sum().alias("c"))
    return joined.group_by("name").agg(pl.col("v").sum()).sort("name")


def parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str]], list[str]]:
    """A strict reader of the subset of dot ``format_dot`` writes: nodes, edges, filled nodes."""
    lines = text.splitlines()
    assert lines[0] == "digraph plan {"
    assert lines[-1] == "}"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    filled: list[str] = []
    for line in lines[1:-1]:
        if node := NODE.match(line):
            nodes[node[1]] = node[2]
            if node[3]:
                filled.append(node[1])
        elif edge := EDGE.match(line):
            edges.append((edge[1], edge[2]))
        else:
            assert line.startswith(("  rankdir=", "  node [", "  label=")), line
    assert all(a in nodes and b in nodes for a, b in edges)
    return nodes, edges, filled


def test_every_node_type_has_a_row():
    assert set(STAGE_KINDS) == set(typing.get_args(PlanNode))


def test_dot_holds_every_stage_and_the_data_flow(engine):
    plan = plan_lazyframe(_query(), broadcast_limit=engine.options.broadcast_limit)
    text = engine.explain(_query(), format="dot")
    nodes, edges, filled = parse_dot(text)
    stages = plan_stages(plan)
    assert len(nodes) == len(stages)
    assert nodes["s0"].startswith("stage 0: Sort\\nexchange: sample splitters")
    assert any(label.startswith("stage 1: Aggregate") for label in nodes.values())
    assert [nodes[name].split(": ")[1].split(" ")[0] for name in filled] == ["SingleRank"]
    assert len(edges) == len(stages) - 1  # a tree: every stage but the root feeds one
    assert all(int(a[1:]) > int(b[1:]) for a, b in edges)  # children after parents (pre-order)
    assert 'label="distributed plan on 2 ranks"' in text


def test_text_is_unchanged_by_the_table(engine):
    text = engine.explain(_query())
    assert text.splitlines()[0] == "distributed plan on 2 ranks"
    assert "  Sort <- exchange: sample splitters (allgather), range shuffle" in text
    assert "SingleRank HStack (FALLBACK) <- exchange: gather to rank 0" in text


def test_quotes_in_labels_are_escaped():
    plan = plan_lazyframe(pl.LazyFrame({"a": [1]}).with_row_index('say "hi"'))
    nodes, _, _ = parse_dot(format_dot(plan))
    assert nodes["s0"] == "stage 0: RowIndex 'say \\\"hi\\\"'\\nexchange: allgather row counts"


def test_dot_and_text_files(engine, tmp_path):
    engine.explain(_query(), path=tmp_path / "plan.dot")
    parse_dot((tmp_path / "plan.dot").read_text().rstrip("\n"))
    engine.explain(_query(), path=tmp_path / "plan.txt")
    assert (tmp_path / "plan.txt").read_text().startswith("distributed plan on 2 ranks")


def test_unknown_format_lists_the_choices(engine):
    with pytest.raises(ValueError, match="'text', 'dot', 'png', 'svg', 'pdf'"):
        engine.explain(_query(), format="jpeg")


def test_image_without_graphviz_names_the_install(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without Graphviz's dot on its PATH
    with pytest.raises(RuntimeError, match="apt install graphviz"):
        engine.explain(_query(), path=tmp_path / "plan.png")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_png_image(engine, tmp_path):
    image = engine.explain(_query(), format="png", path=tmp_path / "plan.png")
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "plan.png").read_bytes() == image
