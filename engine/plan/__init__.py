"""The distributed planner: polars' DSL plan in, a plan of stages and exchanges out (pure)."""

from engine.plan.explain import format_plan
from engine.plan.nodes import DistributedPlan, Fallback
from engine.plan.planner import plan_for_ranks, plan_lazyframe, plan_query

__all__ = [
    "DistributedPlan",
    "Fallback",
    "format_plan",
    "plan_for_ranks",
    "plan_lazyframe",
    "plan_query",
]
