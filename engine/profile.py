"""Pictures of a query: its stage graph (Graphviz) and a per-rank timeline (matplotlib).

Both tools are optional; without them the functions raise naming the install command. The
text forms (``engine.explain(lf)``, ``format="dot"``, ``print(engine.last_query_stats)``) need
neither.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import polars as pl

    from engine.stats import QueryStats

__all__ = ["IMAGE_FORMATS", "draw_dot", "plot_timeline", "render_plan"]

IMAGE_FORMATS: Final = ("png", "svg", "pdf")
TEXT_FORMATS: Final = ("text", "dot")
_DOT_MISSING: Final = (
    "needs Graphviz's `dot` program on PATH: install it with `apt install graphviz` (Debian/"
    "Ubuntu), `conda install -c conda-forge graphviz` or `brew install graphviz`; "
    "format='dot' returns the same graph as text without it"
)


def draw_dot(dot_text: str, image_format: str, *, timeout_s: float = 60.0) -> bytes:
    """Render Graphviz dot text to ``png``/``svg``/``pdf`` bytes with the ``dot`` program."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format {image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError(f"format={image_format!r} {_DOT_MISSING}")
    done = subprocess.run(
        [program, f"-T{image_format}"],
        input=dot_text.encode(),
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dot -T{image_format} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def _chosen_format(requested: str, path: str | os.PathLike[str] | None) -> str:
    """The format: as requested, or from ``path``'s suffix when the default was left."""
    suffix = Path(path).suffix.lstrip(".").lower() if path is not None else ""
    if requested == "text" and suffix in (*IMAGE_FORMATS, "dot"):
        return suffix
    if requested not in (*TEXT_FORMATS, *IMAGE_FORMATS):
        choices = ", ".join(map(repr, (*TEXT_FORMATS, *IMAGE_FORMATS)))
        raise ValueError(f"explain(format={requested!r}) is not one of {choices}")
    return requested


def render_plan(
    engine: Any,
    lf: pl.LazyFrame,
    requested: str,
    path: str | os.PathLike[str] | None,
) -> str | bytes:
    """``engine.explain(lf, format=, path=)``: the plan as text, dot, or an image."""
    from engine.plan.explain import format_dot, format_plan
    from engine.plan.planner import plan_for_ranks

    chosen = _chosen_format(requested, path)
    plan = plan_for_ranks(lf, engine.nranks, broadcast_limit=engine.options.broadcast_limit)
    result: str | bytes
    if chosen == "text":
        result = format_plan(plan, engine.nranks)
    else:
        result = format_dot(plan, engine.nranks)
        if chosen in IMAGE_FORMATS:
            result = draw_dot(result, chosen)
    if path is not None:
        target = Path(path)
        if isinstance(result, bytes):
            target.write_bytes(result)
        else:
            target.write_text(result + "\n")
    return result


def plot_timeline(stats: QueryStats, path: str | os.PathLike[str]) -> Path:
    """Draw when each stage ran on each rank (one band per rank, one lane per stage).

    Stages nest (a stage runs while it pulls from the stages feeding it), so a lane spans a
    stage's first to last partition; the legend names the stages as ``engine.explain`` does.
    The image format follows ``path``'s suffix (``.png``, ``.svg``, ``.pdf``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "QueryStats.plot_timeline needs matplotlib: pip install matplotlib"
        ) from error
    records = [r for r in stats.records if r.get("end") is not None]
    if not records:
        raise ValueError("this query recorded no stage on any rank: nothing to draw")
    origin = min(r["start"] for r in records)
    names = {s.stage: f"{s.stage}: {s.operation[:40]}" for s in stats.stages}
    lanes = sorted(names)
    figure = Figure(figsize=(10, 1.0 + 0.6 * stats.nranks))
    axes = figure.add_subplot()
    colors = [f"C{index % 10}" for index in range(len(lanes))]
    height = 0.8 / max(len(lanes), 1)
    for record in records:
        lane = lanes.index(record["stage"])
        axes.barh(
            record["rank"] - 0.4 + lane * height + height / 2,
            record["end"] - record["start"],
            left=record["start"] - origin,
            height=height,
            color=colors[lane],
            label=names[record["stage"]],
        )
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes.legend(
        unique.values(),
        unique.keys(),
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    axes.set_yticks(range(stats.nranks), [f"rank {r}" for r in range(stats.nranks)])
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the first stage started")
    axes.set_title(f"query: {stats.seconds:.3f} s on {stats.nranks} ranks")
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target)
    return target
