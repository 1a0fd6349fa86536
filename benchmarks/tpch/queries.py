"""The 22 TPC-H queries in polars' lazy API, with the specification's validation parameters.

Each ``qN(tables, scale_factor=...)`` takes a mapping of table name to ``LazyFrame`` (see
:func:`benchmarks.tpch.data.scan_tables`) and returns the query as a ``LazyFrame``; collecting it
with ``engine=DaskEngine(...)`` or with polars itself must give the same frame. Only Q11 reads
``scale_factor`` (its FRACTION parameter is ``0.0001 / SF``); the others accept it so that every
query has one signature.

The queries are written the way a polars user writes them: joins instead of correlated
subqueries, a one-row aggregate joined back (``how="cross"``) where SQL compares against a
scalar subquery. Money columns are ``Decimal(15, 2)`` in ``tpchgen-cli``'s data, so constants
compared or combined with them are decimal literals: the arithmetic stays exact, as in SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from typing import Final

import polars as pl

__all__ = ["ORDER_BY", "QUERIES", "Query", "Tables"]

Tables = Mapping[str, pl.LazyFrame]
Query = Callable[..., pl.LazyFrame]

_ONE: Final = pl.lit(Decimal("1.00"))
_ZERO: Final = pl.lit(Decimal("0.00"))


def _dec(text: str) -> pl.Expr:
    return pl.lit(Decimal(text))


def _disc_price() -> pl.Expr:
    """``l_extendedprice * (1 - l_discount)``: the revenue of a line in most queries."""
    return pl.col("l_extendedprice") * (_ONE - pl.col("l_discount"))


def q1(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Pricing summary report (DELTA = 90 days)."""
    return (
        tables["lineitem"]
        .filter(pl.col("l_shipdate") <= date(1998, 9, 2))
        .group_by("l_returnflag", "l_linestatus")
        .agg(
            pl.col("l_quantity").sum().alias("sum_qty"),
            pl.col("l_extendedprice").sum().alias("sum_base_price"),
            _disc_price().sum().alias("sum_disc_price"),
            (_disc_price() * (_ONE + pl.col("l_tax"))).sum().alias("sum_charge"),
            pl.col("l_quantity").mean().alias("avg_qty"),
            pl.col("l_extendedprice").mean().alias("avg_price"),
            pl.col("l_discount").mean().alias("avg_disc"),
            pl.len().alias("count_order"),
        )
        .sort("l_returnflag", "l_linestatus")
    )


def q2(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Minimum cost supplier (SIZE = 15, TYPE = BRASS, REGION = EUROPE)."""
    europe_supply = (
        tables["region"]
        .filter(pl.col("r_name") == "EUROPE")
        .join(tables["nation"], left_on="r_regionkey", right_on="n_regionkey")
        .join(tables["supplier"], left_on="n_nationkey", right_on="s_nationkey")
        .join(tables["partsupp"], left_on="s_suppkey", right_on="ps_suppkey")
    )
    brass = (
        tables["part"]
        .filter((pl.col("p_size") == 15) & pl.col("p_type").str.ends_with("BRASS"))
        .join(europe_supply, left_on="p_partkey", right_on="ps_partkey")
    )
    min_cost = brass.group_by("p_partkey").agg(pl.col("ps_supplycost").min().alias("min_cost"))
    return (
        brass.join(min_cost, on="p_partkey")
        .filter(pl.col("ps_supplycost") == pl.col("min_cost"))
        .select(
            "s_acctbal",
            "s_name",
            "n_name",
            "p_partkey",
            "p_mfgr",
            "s_address",
            "s_phone",
            "s_comment",
        )
        .sort(
            ["s_acctbal", "n_name", "s_name", "p_partkey"],
            descending=[True, False, False, False],
        )
        .head(100)
    )


def q3(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Shipping priority (SEGMENT = BUILDING, DATE = 1995-03-15)."""
    day = date(1995, 3, 15)
    return (
        tables["customer"]
        .filter(pl.col("c_mktsegment") == "BUILDING")
        .join(
            tables["orders"].filter(pl.col("o_orderdate") < day),
            left_on="c_custkey",
            right_on="o_custkey",
        )
        .join(
            tables["lineitem"].filter(pl.col("l_shipdate") > day),
            left_on="o_orderkey",
            right_on="l_orderkey",
        )
        .group_by("o_orderkey", "o_orderdate", "o_shippriority")
        .agg(_disc_price().sum().alias("revenue"))
        .select(
            pl.col("o_orderkey").alias("l_orderkey"), "revenue", "o_orderdate", "o_shippriority"
        )
        .sort(["revenue", "o_orderdate"], descending=[True, False])
        .head(10)
    )


def q4(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Order priority checking (DATE = 1993-07-01)."""
    late_lines = tables["lineitem"].filter(pl.col("l_commitdate") < pl.col("l_receiptdate"))
    return (
        tables["orders"]
        .filter(pl.col("o_orderdate").is_between(date(1993, 7, 1), date(1993, 10, 1), "left"))
        .join(late_lines, left_on="o_orderkey", right_on="l_orderkey", how="semi")
        .group_by("o_orderpriority")
        .agg(pl.len().alias("order_count"))
        .sort("o_orderpriority")
    )


def q5(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Local supplier volume (REGION = ASIA, DATE = 1994-01-01)."""
    return (
        tables["region"]
        .filter(pl.col("r_name") == "ASIA")
        .join(tables["nation"], left_on="r_regionkey", right_on="n_regionkey")
        .join(tables["customer"], left_on="n_nationkey", right_on="c_nationkey")
        .join(
            tables["orders"].filter(
                pl.col("o_orderdate").is_between(date(1994, 1, 1), date(1995, 1, 1), "left")
            ),
            left_on="c_custkey",
            right_on="o_custkey",
        )
        .join(tables["lineitem"], left_on="o_orderkey", right_on="l_orderkey")
        .join(
            tables["supplier"],
            left_on=["l_suppkey", "n_nationkey"],
            right_on=["s_suppkey", "s_nationkey"],
        )
        .group_by("n_name")
        .agg(_disc_price().sum().alias("revenue"))
        .sort("revenue", descending=True)
    )


def q6(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Forecasting revenue change (DATE = 1994-01-01, DISCOUNT = 0.06, QUANTITY = 24)."""
    return (
        tables["lineitem"]
        .filter(
            pl.col("l_shipdate").is_between(date(1994, 1, 1), date(1995, 1, 1), "left")
            & pl.col("l_discount").is_between(_dec("0.05"), _dec("0.07"))
            & (pl.col("l_quantity") < _dec("24"))
        )
        .select((pl.col("l_extendedprice") * pl.col("l_discount")).sum().alias("revenue"))
    )


def q7(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Volume shipping (NATION1 = FRANCE, NATION2 = GERMANY)."""
    nations = tables["nation"].filter(pl.col("n_name").is_in(["FRANCE", "GERMANY"]))
    suppliers = tables["supplier"].join(
        nations.select(pl.col("n_nationkey"), pl.col("n_name").alias("supp_nation")),
        left_on="s_nationkey",
        right_on="n_nationkey",
    )
    customers = tables["customer"].join(
        nations.select(pl.col("n_nationkey"), pl.col("n_name").alias("cust_nation")),
        left_on="c_nationkey",
        right_on="n_nationkey",
    )
    return (
        tables["lineitem"]
        .filter(pl.col("l_shipdate").is_between(date(1995, 1, 1), date(1996, 12, 31)))
        .join(suppliers, left_on="l_suppkey", right_on="s_suppkey")
        .join(tables["orders"], left_on="l_orderkey", right_on="o_orderkey")
        .join(customers, left_on="o_custkey", right_on="c_custkey")
        .filter(pl.col("supp_nation") != pl.col("cust_nation"))
        .group_by("supp_nation", "cust_nation", pl.col("l_shipdate").dt.year().alias("l_year"))
        .agg(_disc_price().sum().alias("revenue"))
        .sort("supp_nation", "cust_nation", "l_year")
    )


def q8(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """National market share (NATION = BRAZIL, REGION = AMERICA, TYPE = ECONOMY ANODIZED STEEL)."""
    american_customers = (
        tables["region"]
        .filter(pl.col("r_name") == "AMERICA")
        .join(tables["nation"], left_on="r_regionkey", right_on="n_regionkey")
        .join(tables["customer"], left_on="n_nationkey", right_on="c_nationkey")
        .select("c_custkey")
    )
    supplier_nations = tables["supplier"].join(
        tables["nation"], left_on="s_nationkey", right_on="n_nationkey"
    )
    volume = _disc_price()
    return (
        tables["part"]
        .filter(pl.col("p_type") == "ECONOMY ANODIZED STEEL")
        .join(tables["lineitem"], left_on="p_partkey", right_on="l_partkey")
        .join(
            tables["orders"].filter(
                pl.col("o_orderdate").is_between(date(1995, 1, 1), date(1996, 12, 31))
            ),
            left_on="l_orderkey",
            right_on="o_orderkey",
        )
        .join(american_customers, left_on="o_custkey", right_on="c_custkey")
        .join(supplier_nations, left_on="l_suppkey", right_on="s_suppkey")
        .group_by(pl.col("o_orderdate").dt.year().alias("o_year"))
        .agg(
            (
                pl.when(pl.col("n_name") == "BRAZIL")
                .then(volume)
                .otherwise(_ZERO)
                .sum()
                .cast(pl.Float64)
                / volume.sum().cast(pl.Float64)
            ).alias("mkt_share")
        )
        .sort("o_year")
    )


def q9(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Product type profit measure (COLOR = green)."""
    return (
        tables["part"]
        .filter(pl.col("p_name").str.contains("green", literal=True))
        .join(tables["lineitem"], left_on="p_partkey", right_on="l_partkey")
        .join(tables["supplier"], left_on="l_suppkey", right_on="s_suppkey")
        .join(
            tables["partsupp"],
            left_on=["l_suppkey", "p_partkey"],
            right_on=["ps_suppkey", "ps_partkey"],
        )
        .join(tables["orders"], left_on="l_orderkey", right_on="o_orderkey")
        .join(tables["nation"], left_on="s_nationkey", right_on="n_nationkey")
        .group_by(pl.col("n_name").alias("nation"), pl.col("o_orderdate").dt.year().alias("o_year"))
        .agg(
            (_disc_price() - pl.col("ps_supplycost") * pl.col("l_quantity"))
            .sum()
            .alias("sum_profit")
        )
        .sort(["nation", "o_year"], descending=[False, True])
    )


def q10(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Returned item reporting (DATE = 1993-10-01)."""
    return (
        tables["orders"]
        .filter(pl.col("o_orderdate").is_between(date(1993, 10, 1), date(1994, 1, 1), "left"))
        .join(
            tables["lineitem"].filter(pl.col("l_returnflag") == "R"),
            left_on="o_orderkey",
            right_on="l_orderkey",
        )
        .join(tables["customer"], left_on="o_custkey", right_on="c_custkey")
        .join(tables["nation"], left_on="c_nationkey", right_on="n_nationkey")
        .group_by(
            pl.col("o_custkey").alias("c_custkey"),
            "c_name",
            "c_acctbal",
            "c_phone",
            "n_name",
            "c_address",
            "c_comment",
        )
        .agg(_disc_price().sum().alias("revenue"))
        .select(
            "c_custkey",
            "c_name",
            "revenue",
            "c_acctbal",
            "n_name",
            "c_address",
            "c_phone",
            "c_comment",
        )
        .sort("revenue", descending=True)
        .head(20)
    )


def q11(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Important stock identification (NATION = GERMANY, FRACTION = 0.0001 / SF)."""
    german_stock = (
        tables["nation"]
        .filter(pl.col("n_name") == "GERMANY")
        .join(tables["supplier"], left_on="n_nationkey", right_on="s_nationkey")
        .join(tables["partsupp"], left_on="s_suppkey", right_on="ps_suppkey")
        .with_columns((pl.col("ps_supplycost") * pl.col("ps_availqty")).alias("value"))
    )
    threshold = german_stock.select(
        (pl.col("value").sum().cast(pl.Float64) * (0.0001 / scale_factor)).alias("threshold")
    )
    return (
        german_stock.group_by("ps_partkey")
        .agg(pl.col("value").sum())
        .join(threshold, how="cross")
        .filter(pl.col("value").cast(pl.Float64) > pl.col("threshold"))
        .select("ps_partkey", "value")
        .sort("value", descending=True)
    )


def q12(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Shipping modes and order priority (SHIPMODE1 = MAIL, SHIPMODE2 = SHIP, DATE = 1994-01-01)."""
    urgent = pl.col("o_orderpriority").is_in(["1-URGENT", "2-HIGH"])
    return (
        tables["lineitem"]
        .filter(
            pl.col("l_shipmode").is_in(["MAIL", "SHIP"])
            & (pl.col("l_commitdate") < pl.col("l_receiptdate"))
            & (pl.col("l_shipdate") < pl.col("l_commitdate"))
            & pl.col("l_receiptdate").is_between(date(1994, 1, 1), date(1995, 1, 1), "left")
        )
        .join(tables["orders"], left_on="l_orderkey", right_on="o_orderkey")
        .group_by("l_shipmode")
        .agg(
            urgent.cast(pl.Int64).sum().alias("high_line_count"),
            (~urgent).cast(pl.Int64).sum().alias("low_line_count"),
        )
        .sort("l_shipmode")
    )


def q13(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Customer distribution (WORD1 = special, WORD2 = requests)."""
    plain_orders = tables["orders"].filter(~pl.col("o_comment").str.contains("special.*requests"))
    return (
        tables["customer"]
        .join(plain_orders, left_on="c_custkey", right_on="o_custkey", how="left")
        .group_by("c_custkey")
        .agg(pl.col("o_orderkey").count().alias("c_count"))
        .group_by("c_count")
        .agg(pl.len().alias("custdist"))
        .sort(["custdist", "c_count"], descending=[True, True])
    )


def q14(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Promotion effect (DATE = 1995-09-01)."""
    revenue = _disc_price()
    promo = pl.when(pl.col("p_type").str.starts_with("PROMO")).then(revenue).otherwise(_ZERO)
    return (
        tables["lineitem"]
        .filter(pl.col("l_shipdate").is_between(date(1995, 9, 1), date(1995, 10, 1), "left"))
        .join(tables["part"], left_on="l_partkey", right_on="p_partkey")
        .select(
            (100.0 * promo.sum().cast(pl.Float64) / revenue.sum().cast(pl.Float64)).alias(
                "promo_revenue"
            )
        )
    )


def q15(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Top supplier (DATE = 1996-01-01)."""
    revenue = (
        tables["lineitem"]
        .filter(pl.col("l_shipdate").is_between(date(1996, 1, 1), date(1996, 4, 1), "left"))
        .group_by(pl.col("l_suppkey").alias("supplier_no"))
        .agg(_disc_price().sum().alias("total_revenue"))
    )
    top = revenue.select(pl.col("total_revenue").max().alias("max_revenue"))
    return (
        tables["supplier"]
        .join(revenue, left_on="s_suppkey", right_on="supplier_no")
        .join(top, how="cross")
        .filter(pl.col("total_revenue") == pl.col("max_revenue"))
        .select("s_suppkey", "s_name", "s_address", "s_phone", "total_revenue")
        .sort("s_suppkey")
    )


def q16(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Parts/supplier relationship (BRAND = Brand#45, TYPE = MEDIUM POLISHED, SIZES = 49 14 ...)."""
    complaints = tables["supplier"].filter(pl.col("s_comment").str.contains("Customer.*Complaints"))
    return (
        tables["part"]
        .filter(
            (pl.col("p_brand") != "Brand#45")
            & ~pl.col("p_type").str.starts_with("MEDIUM POLISHED")
            & pl.col("p_size").is_in([49, 14, 23, 45, 19, 3, 36, 9])
        )
        .join(tables["partsupp"], left_on="p_partkey", right_on="ps_partkey")
        .join(complaints, left_on="ps_suppkey", right_on="s_suppkey", how="anti")
        .group_by("p_brand", "p_type", "p_size")
        .agg(pl.col("ps_suppkey").n_unique().alias("supplier_cnt"))
        .sort(
            ["supplier_cnt", "p_brand", "p_type", "p_size"],
            descending=[True, False, False, False],
        )
    )


def q17(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Small-quantity-order revenue (BRAND = Brand#23, CONTAINER = MED BOX)."""
    lines = (
        tables["part"]
        .filter((pl.col("p_brand") == "Brand#23") & (pl.col("p_container") == "MED BOX"))
        .join(tables["lineitem"], left_on="p_partkey", right_on="l_partkey")
    )
    small = lines.group_by("p_partkey").agg(
        (0.2 * pl.col("l_quantity").cast(pl.Float64).mean()).alias("small_qty")
    )
    return (
        lines.join(small, on="p_partkey")
        .filter(pl.col("l_quantity").cast(pl.Float64) < pl.col("small_qty"))
        .select((pl.col("l_extendedprice").sum().cast(pl.Float64) / 7.0).alias("avg_yearly"))
    )


def q18(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Large volume customer (QUANTITY = 300)."""
    large_orders = (
        tables["lineitem"]
        .group_by("l_orderkey")
        .agg(pl.col("l_quantity").sum().alias("order_qty"))
        .filter(pl.col("order_qty") > _dec("300"))
    )
    return (
        tables["orders"]
        .join(large_orders, left_on="o_orderkey", right_on="l_orderkey", how="semi")
        .join(tables["customer"], left_on="o_custkey", right_on="c_custkey")
        .join(tables["lineitem"], left_on="o_orderkey", right_on="l_orderkey")
        .group_by(
            "c_name",
            pl.col("o_custkey").alias("c_custkey"),
            "o_orderkey",
            "o_orderdate",
            "o_totalprice",
        )
        .agg(pl.col("l_quantity").sum().alias("sum_qty"))
        .sort(["o_totalprice", "o_orderdate"], descending=[True, False])
        .head(100)
    )


def _q19_branch(brand: str, containers: list[str], low_qty: int, max_size: int) -> pl.Expr:
    return (
        (pl.col("p_brand") == brand)
        & pl.col("p_container").is_in(containers)
        & pl.col("l_quantity").is_between(_dec(str(low_qty)), _dec(str(low_qty + 10)))
        & pl.col("p_size").is_between(1, max_size)
    )


def q19(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Discounted revenue (QUANTITY1..3 = 1, 10, 20; BRAND1..3 = Brand#12, #23, #34)."""
    return (
        tables["lineitem"]
        .filter(
            pl.col("l_shipmode").is_in(["AIR", "AIR REG"])
            & (pl.col("l_shipinstruct") == "DELIVER IN PERSON")
        )
        .join(tables["part"], left_on="l_partkey", right_on="p_partkey")
        .filter(
            _q19_branch("Brand#12", ["SM CASE", "SM BOX", "SM PACK", "SM PKG"], 1, 5)
            | _q19_branch("Brand#23", ["MED BAG", "MED BOX", "MED PKG", "MED PACK"], 10, 10)
            | _q19_branch("Brand#34", ["LG CASE", "LG BOX", "LG PACK", "LG PKG"], 20, 15)
        )
        .select(_disc_price().sum().alias("revenue"))
    )


def q20(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Potential part promotion (COLOR = forest, DATE = 1994-01-01, NATION = CANADA)."""
    forest_parts = tables["part"].filter(pl.col("p_name").str.starts_with("forest"))
    shipped = (
        tables["lineitem"]
        .filter(pl.col("l_shipdate").is_between(date(1994, 1, 1), date(1995, 1, 1), "left"))
        .group_by("l_partkey", "l_suppkey")
        .agg((0.5 * pl.col("l_quantity").sum().cast(pl.Float64)).alias("half_qty"))
    )
    excess = (
        tables["partsupp"]
        .join(forest_parts, left_on="ps_partkey", right_on="p_partkey", how="semi")
        .join(shipped, left_on=["ps_partkey", "ps_suppkey"], right_on=["l_partkey", "l_suppkey"])
        .filter(pl.col("ps_availqty") > pl.col("half_qty"))
    )
    return (
        tables["supplier"]
        .join(
            tables["nation"].filter(pl.col("n_name") == "CANADA"),
            left_on="s_nationkey",
            right_on="n_nationkey",
        )
        .join(excess, left_on="s_suppkey", right_on="ps_suppkey", how="semi")
        .select("s_name", "s_address")
        .sort("s_name")
    )


def q21(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Suppliers who kept orders waiting (NATION = SAUDI ARABIA).

    ``exists`` another supplier on the order: the order has more than one supplier;
    ``not exists`` another *late* supplier: the order's late lines have exactly one supplier.
    """
    lineitem = tables["lineitem"]
    late = lineitem.filter(pl.col("l_receiptdate") > pl.col("l_commitdate"))
    suppliers_per_order = lineitem.group_by("l_orderkey").agg(
        pl.col("l_suppkey").n_unique().alias("n_supp")
    )
    late_suppliers_per_order = late.group_by("l_orderkey").agg(
        pl.col("l_suppkey").n_unique().alias("n_late_supp")
    )
    saudi_suppliers = tables["supplier"].join(
        tables["nation"].filter(pl.col("n_name") == "SAUDI ARABIA"),
        left_on="s_nationkey",
        right_on="n_nationkey",
    )
    return (
        late.join(saudi_suppliers, left_on="l_suppkey", right_on="s_suppkey")
        .join(
            tables["orders"].filter(pl.col("o_orderstatus") == "F"),
            left_on="l_orderkey",
            right_on="o_orderkey",
        )
        .join(suppliers_per_order.filter(pl.col("n_supp") > 1), on="l_orderkey")
        .join(late_suppliers_per_order.filter(pl.col("n_late_supp") == 1), on="l_orderkey")
        .group_by("s_name")
        .agg(pl.len().alias("numwait"))
        .sort(["numwait", "s_name"], descending=[True, False])
        .head(100)
    )


def q22(tables: Tables, scale_factor: float = 1.0) -> pl.LazyFrame:
    """Global sales opportunity (I1..I7 = 13, 31, 23, 29, 30, 18, 17)."""
    codes = ["13", "31", "23", "29", "30", "18", "17"]
    candidates = (
        tables["customer"]
        .with_columns(pl.col("c_phone").str.slice(0, 2).alias("cntrycode"))
        .filter(pl.col("cntrycode").is_in(codes))
    )
    average = candidates.filter(pl.col("c_acctbal") > _ZERO).select(
        pl.col("c_acctbal").cast(pl.Float64).mean().alias("avg_acctbal")
    )
    return (
        candidates.join(average, how="cross")
        .filter(pl.col("c_acctbal").cast(pl.Float64) > pl.col("avg_acctbal"))
        .join(tables["orders"], left_on="c_custkey", right_on="o_custkey", how="anti")
        .group_by("cntrycode")
        .agg(pl.len().alias("numcust"), pl.col("c_acctbal").sum().alias("totacctbal"))
        .sort("cntrycode")
    )


QUERIES: Final[dict[int, Query]] = {
    number: query
    for number, query in enumerate(
        (
            q1,
            q2,
            q3,
            q4,
            q5,
            q6,
            q7,
            q8,
            q9,
            q10,
            q11,
            q12,
            q13,
            q14,
            q15,
            q16,
            q17,
            q18,
            q19,
            q20,
            q21,
            q22,
        ),
        start=1,
    )
}
"""Query number (1..22) to the function that builds it."""

ORDER_BY: Final[dict[int, tuple[str, ...]]] = {
    1: ("l_returnflag", "l_linestatus"),
    2: ("s_acctbal", "n_name", "s_name", "p_partkey"),
    3: ("revenue", "o_orderdate"),
    4: ("o_orderpriority",),
    5: ("revenue",),
    7: ("supp_nation", "cust_nation", "l_year"),
    8: ("o_year",),
    9: ("nation", "o_year"),
    10: ("revenue",),
    11: ("value",),
    12: ("l_shipmode",),
    13: ("custdist", "c_count"),
    15: ("s_suppkey",),
    16: ("supplier_cnt", "p_brand", "p_type", "p_size"),
    18: ("o_totalprice", "o_orderdate"),
    20: ("s_name",),
    21: ("numwait", "s_name"),
    22: ("cntrycode",),
}
"""Each query's ORDER BY columns (TPC-H's specification): rows that tie on them may come in
any order. Queries of one row have none."""
