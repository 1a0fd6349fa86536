"""The 22 TPC-H queries for ``dask.dataframe``: the third column of the benchmark.

A fair port of ``queries.py``: the same joins, filters and aggregations, written the way a Dask
user writes them. Joins are ``merge`` (Dask broadcasts a single-partition side by itself), a
semi join is a merge with the distinct keys, an anti join a left merge that keeps unmatched rows,
and a scalar subquery is a lazy Dask scalar. Each query computes on the cluster of the active
``distributed.Client`` and sorts and limits its small final result in pandas, which is what the
client of any Dask query does with a result it holds.

pandas has no fast decimal type, so :func:`read_tables` reads ``tpchgen-cli``'s
``Decimal(15, 2)`` money columns as ``float64``. Dates stay pyarrow ``date32`` and are compared
with ``datetime.date``: casting them to ``datetime64`` broke the queries, because Dask pushed the
date filters below the cast into the parquet reader, where the column is still ``date32``.
:func:`to_polars` turns a result back into the types ``queries.py`` returns, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Final

import polars as pl

from benchmarks.tpch.data import table_paths

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd

__all__ = ["DASK_QUERIES", "read_tables", "to_polars"]

DaskTables = Mapping[str, "dd.DataFrame"]
DaskQuery = Callable[..., "pd.DataFrame"]


def read_tables(data_dir: Path, blocksize: str = "64MiB") -> dict[str, dd.DataFrame]:
    """One ``dd.read_parquet`` per table, decimals as ``float64``.

    ``tpchgen-cli`` writes one file per table; Dask's default makes that file one partition,
    which leaves all but one worker idle. Splitting by row groups into ``blocksize`` pieces
    gives every worker a share, as the DaskEngine's row-group split does.
    """
    import dask.dataframe as dd
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = {}
    for name, path in table_paths(data_dir).items():
        decimals = [field.name for field in pq.read_schema(path) if pa.types.is_decimal(field.type)]
        frame = dd.read_parquet(str(path), split_row_groups="adaptive", blocksize=blocksize)
        # Cast in Arrow first: pandas' own decimal-to-float64 cast goes through Python Decimal
        # objects, ~150x slower, and would make the port pay for a conversion, not the query.
        frame = frame.astype(dict.fromkeys(decimals, pd.ArrowDtype(pa.float64())))
        tables[name] = frame.astype(dict.fromkeys(decimals, "float64"))
    return tables


def to_polars(frame: pd.DataFrame) -> pl.DataFrame:
    """A query's pandas result as polars, the pandas index dropped."""
    return pl.from_pandas(frame.reset_index(drop=True))


def _day(text: str) -> date:
    return date.fromisoformat(text)


def _finish(
    frame: dd.DataFrame | pd.DataFrame,
    columns: list[str],
    by: list[str],
    ascending: list[bool] | bool = True,
    limit: int | None = None,
) -> pd.DataFrame:
    """Compute the (small) aggregated result, then order and limit it in pandas."""
    result = frame.compute() if hasattr(frame, "compute") else frame
    result = result.reset_index(drop=True)[columns]
    result = result.sort_values(by, ascending=ascending, kind="stable")
    return result if limit is None else result.head(limit)


def _disc_price(frame: dd.DataFrame) -> dd.Series:
    return frame["l_extendedprice"] * (1 - frame["l_discount"])


def q1(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    lineitem = t["lineitem"]
    lines = lineitem[lineitem["l_shipdate"] <= _day("1998-09-02")]
    lines = lines.assign(disc_price=_disc_price(lines))
    lines = lines.assign(charge=lines["disc_price"] * (1 + lines["l_tax"]))
    result = lines.groupby(["l_returnflag", "l_linestatus"]).agg(
        sum_qty=("l_quantity", "sum"),
        sum_base_price=("l_extendedprice", "sum"),
        sum_disc_price=("disc_price", "sum"),
        sum_charge=("charge", "sum"),
        avg_qty=("l_quantity", "mean"),
        avg_price=("l_extendedprice", "mean"),
        avg_disc=("l_discount", "mean"),
        count_order=("l_orderkey", "count"),
    )
    columns = [
        "l_returnflag",
        "l_linestatus",
        "sum_qty",
        "sum_base_price",
        "sum_disc_price",
        "sum_charge",
        "avg_qty",
        "avg_price",
        "avg_disc",
        "count_order",
    ]
    return _finish(result.reset_index(), columns, ["l_returnflag", "l_linestatus"])


def q2(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    region, part = t["region"], t["part"]
    europe_supply = (
        region[region["r_name"] == "EUROPE"]
        .merge(t["nation"], left_on="r_regionkey", right_on="n_regionkey")
        .merge(t["supplier"], left_on="n_nationkey", right_on="s_nationkey")
        .merge(t["partsupp"], left_on="s_suppkey", right_on="ps_suppkey")
    )
    brass = part[(part["p_size"] == 15) & part["p_type"].str.endswith("BRASS")].merge(
        europe_supply, left_on="p_partkey", right_on="ps_partkey"
    )
    min_cost = brass.groupby("p_partkey")["ps_supplycost"].min().rename("min_cost").reset_index()
    best = brass.merge(min_cost, on="p_partkey")
    best = best[best["ps_supplycost"] == best["min_cost"]]
    columns = [
        "s_acctbal",
        "s_name",
        "n_name",
        "p_partkey",
        "p_mfgr",
        "s_address",
        "s_phone",
        "s_comment",
    ]
    return _finish(
        best[columns],
        columns,
        ["s_acctbal", "n_name", "s_name", "p_partkey"],
        [False, True, True, True],
        100,
    )


def q3(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    customer, orders, lineitem = t["customer"], t["orders"], t["lineitem"]
    day = _day("1995-03-15")
    joined = (
        customer[customer["c_mktsegment"] == "BUILDING"]
        .merge(orders[orders["o_orderdate"] < day], left_on="c_custkey", right_on="o_custkey")
        .merge(lineitem[lineitem["l_shipdate"] > day], left_on="o_orderkey", right_on="l_orderkey")
    )
    joined = joined.assign(revenue=_disc_price(joined))
    result = (
        joined.groupby(["l_orderkey", "o_orderdate", "o_shippriority"])["revenue"]
        .sum()
        .reset_index()
    )
    columns = ["l_orderkey", "revenue", "o_orderdate", "o_shippriority"]
    return _finish(result, columns, ["revenue", "o_orderdate"], [False, True], 10)


def q4(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    orders, lineitem = t["orders"], t["lineitem"]
    in_quarter = orders[
        (orders["o_orderdate"] >= _day("1993-07-01")) & (orders["o_orderdate"] < _day("1993-10-01"))
    ]
    late_orders = lineitem[lineitem["l_commitdate"] < lineitem["l_receiptdate"]][
        ["l_orderkey"]
    ].drop_duplicates()
    result = (
        in_quarter.merge(late_orders, left_on="o_orderkey", right_on="l_orderkey")
        .groupby("o_orderpriority")
        .size()
        .rename("order_count")
        .reset_index()
    )
    return _finish(result, ["o_orderpriority", "order_count"], ["o_orderpriority"])


def q5(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    region, orders = t["region"], t["orders"]
    joined = (
        region[region["r_name"] == "ASIA"]
        .merge(t["nation"], left_on="r_regionkey", right_on="n_regionkey")
        .merge(t["customer"], left_on="n_nationkey", right_on="c_nationkey")
        .merge(
            orders[
                (orders["o_orderdate"] >= _day("1994-01-01"))
                & (orders["o_orderdate"] < _day("1995-01-01"))
            ],
            left_on="c_custkey",
            right_on="o_custkey",
        )
        .merge(t["lineitem"], left_on="o_orderkey", right_on="l_orderkey")
        .merge(
            t["supplier"],
            left_on=["l_suppkey", "n_nationkey"],
            right_on=["s_suppkey", "s_nationkey"],
        )
    )
    joined = joined.assign(revenue=_disc_price(joined))
    result = joined.groupby("n_name")["revenue"].sum().reset_index()
    return _finish(result, ["n_name", "revenue"], ["revenue"], False)


def q6(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    import pandas as pd

    lineitem = t["lineitem"]
    lines = lineitem[
        (lineitem["l_shipdate"] >= _day("1994-01-01"))
        & (lineitem["l_shipdate"] < _day("1995-01-01"))
        & (lineitem["l_discount"] >= 0.05)
        & (lineitem["l_discount"] <= 0.07)
        & (lineitem["l_quantity"] < 24)
    ]
    revenue = (lines["l_extendedprice"] * lines["l_discount"]).sum().compute()
    return pd.DataFrame({"revenue": [revenue]})


def q7(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    nation, lineitem = t["nation"], t["lineitem"]
    nations = nation[nation["n_name"].isin(["FRANCE", "GERMANY"])]
    suppliers = t["supplier"].merge(
        nations[["n_nationkey", "n_name"]].rename(columns={"n_name": "supp_nation"}),
        left_on="s_nationkey",
        right_on="n_nationkey",
    )
    customers = t["customer"].merge(
        nations[["n_nationkey", "n_name"]].rename(columns={"n_name": "cust_nation"}),
        left_on="c_nationkey",
        right_on="n_nationkey",
    )
    joined = (
        lineitem[
            (lineitem["l_shipdate"] >= _day("1995-01-01"))
            & (lineitem["l_shipdate"] <= _day("1996-12-31"))
        ]
        .merge(suppliers, left_on="l_suppkey", right_on="s_suppkey")
        .merge(t["orders"], left_on="l_orderkey", right_on="o_orderkey")
        .merge(customers, left_on="o_custkey", right_on="c_custkey")
    )
    joined = joined[joined["supp_nation"] != joined["cust_nation"]]
    joined = joined.assign(l_year=joined["l_shipdate"].dt.year, revenue=_disc_price(joined))
    result = joined.groupby(["supp_nation", "cust_nation", "l_year"])["revenue"].sum().reset_index()
    keys = ["supp_nation", "cust_nation", "l_year"]
    return _finish(result, [*keys, "revenue"], keys)


def q8(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    region, part, orders = t["region"], t["part"], t["orders"]
    american_customers = (
        region[region["r_name"] == "AMERICA"]
        .merge(t["nation"], left_on="r_regionkey", right_on="n_regionkey")
        .merge(t["customer"], left_on="n_nationkey", right_on="c_nationkey")[["c_custkey"]]
    )
    supplier_nations = t["supplier"].merge(
        t["nation"], left_on="s_nationkey", right_on="n_nationkey"
    )[["s_suppkey", "n_name"]]
    joined = (
        part[part["p_type"] == "ECONOMY ANODIZED STEEL"]
        .merge(t["lineitem"], left_on="p_partkey", right_on="l_partkey")
        .merge(
            orders[
                (orders["o_orderdate"] >= _day("1995-01-01"))
                & (orders["o_orderdate"] <= _day("1996-12-31"))
            ],
            left_on="l_orderkey",
            right_on="o_orderkey",
        )
        .merge(american_customers, left_on="o_custkey", right_on="c_custkey")
        .merge(supplier_nations, left_on="l_suppkey", right_on="s_suppkey")
    )
    volume = _disc_price(joined)
    joined = joined.assign(
        o_year=joined["o_orderdate"].dt.year,
        volume=volume,
        brazil_volume=volume.where(joined["n_name"] == "BRAZIL", 0.0),
    )
    sums = joined.groupby("o_year")[["brazil_volume", "volume"]].sum().compute().reset_index()
    sums["mkt_share"] = sums["brazil_volume"] / sums["volume"]
    return _finish(sums, ["o_year", "mkt_share"], ["o_year"])


def q9(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    part = t["part"]
    joined = (
        part[part["p_name"].str.contains("green", regex=False)]
        .merge(t["lineitem"], left_on="p_partkey", right_on="l_partkey")
        .merge(t["supplier"], left_on="l_suppkey", right_on="s_suppkey")
        .merge(
            t["partsupp"],
            left_on=["l_suppkey", "p_partkey"],
            right_on=["ps_suppkey", "ps_partkey"],
        )
        .merge(t["orders"], left_on="l_orderkey", right_on="o_orderkey")
        .merge(t["nation"], left_on="s_nationkey", right_on="n_nationkey")
    )
    joined = joined.assign(
        nation=joined["n_name"],
        o_year=joined["o_orderdate"].dt.year,
        sum_profit=_disc_price(joined) - joined["ps_supplycost"] * joined["l_quantity"],
    )
    result = joined.groupby(["nation", "o_year"])["sum_profit"].sum().reset_index()
    return _finish(result, ["nation", "o_year", "sum_profit"], ["nation", "o_year"], [True, False])


def q10(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    orders, lineitem = t["orders"], t["lineitem"]
    joined = (
        orders[
            (orders["o_orderdate"] >= _day("1993-10-01"))
            & (orders["o_orderdate"] < _day("1994-01-01"))
        ]
        .merge(
            lineitem[lineitem["l_returnflag"] == "R"], left_on="o_orderkey", right_on="l_orderkey"
        )
        .merge(t["customer"], left_on="o_custkey", right_on="c_custkey")
        .merge(t["nation"], left_on="c_nationkey", right_on="n_nationkey")
    )
    joined = joined.assign(revenue=_disc_price(joined))
    keys = ["c_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment"]
    result = joined.groupby(keys)["revenue"].sum().reset_index()
    columns = [
        "c_custkey",
        "c_name",
        "revenue",
        "c_acctbal",
        "n_name",
        "c_address",
        "c_phone",
        "c_comment",
    ]
    return _finish(result, columns, ["revenue"], False, 20)


def q11(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    nation = t["nation"]
    german_stock = (
        nation[nation["n_name"] == "GERMANY"]
        .merge(t["supplier"], left_on="n_nationkey", right_on="s_nationkey")
        .merge(t["partsupp"], left_on="s_suppkey", right_on="ps_suppkey")
    )
    german_stock = german_stock.assign(
        value=german_stock["ps_supplycost"] * german_stock["ps_availqty"]
    )
    threshold = german_stock["value"].sum() * (0.0001 / scale_factor)
    per_part = german_stock.groupby("ps_partkey")["value"].sum().reset_index()
    result = per_part[per_part["value"] > threshold]
    return _finish(result, ["ps_partkey", "value"], ["value"], False)


def q12(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    lineitem = t["lineitem"]
    lines = lineitem[
        lineitem["l_shipmode"].isin(["MAIL", "SHIP"])
        & (lineitem["l_commitdate"] < lineitem["l_receiptdate"])
        & (lineitem["l_shipdate"] < lineitem["l_commitdate"])
        & (lineitem["l_receiptdate"] >= _day("1994-01-01"))
        & (lineitem["l_receiptdate"] < _day("1995-01-01"))
    ]
    joined = lines.merge(t["orders"], left_on="l_orderkey", right_on="o_orderkey")
    urgent = joined["o_orderpriority"].isin(["1-URGENT", "2-HIGH"])
    joined = joined.assign(
        high_line_count=urgent.astype("int64"), low_line_count=(~urgent).astype("int64")
    )
    result = joined.groupby("l_shipmode")[["high_line_count", "low_line_count"]].sum().reset_index()
    return _finish(result, ["l_shipmode", "high_line_count", "low_line_count"], ["l_shipmode"])


def q13(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    orders = t["orders"]
    plain_orders = orders[~orders["o_comment"].str.contains("special.*requests", regex=True)]
    per_customer = (
        t["customer"][["c_custkey"]]
        .merge(
            plain_orders[["o_custkey", "o_orderkey"]],
            left_on="c_custkey",
            right_on="o_custkey",
            how="left",
        )
        .groupby("c_custkey")["o_orderkey"]
        .count()
        .rename("c_count")
        .reset_index()
    )
    result = per_customer.groupby("c_count").size().rename("custdist").reset_index()
    return _finish(result, ["c_count", "custdist"], ["custdist", "c_count"], [False, False])


def q14(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    import dask
    import pandas as pd

    lineitem = t["lineitem"]
    joined = lineitem[
        (lineitem["l_shipdate"] >= _day("1995-09-01"))
        & (lineitem["l_shipdate"] < _day("1995-10-01"))
    ].merge(t["part"], left_on="l_partkey", right_on="p_partkey")
    revenue = _disc_price(joined)
    promo = revenue.where(joined["p_type"].str.startswith("PROMO"), 0.0)
    promo_sum, revenue_sum = dask.compute(promo.sum(), revenue.sum())
    return pd.DataFrame({"promo_revenue": [100.0 * promo_sum / revenue_sum]})


def q15(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    lineitem = t["lineitem"]
    lines = lineitem[
        (lineitem["l_shipdate"] >= _day("1996-01-01"))
        & (lineitem["l_shipdate"] < _day("1996-04-01"))
    ]
    lines = lines.assign(total_revenue=_disc_price(lines))
    revenue = (
        lines.groupby("l_suppkey")["total_revenue"]
        .sum()
        .reset_index()
        .rename(columns={"l_suppkey": "supplier_no"})
    )
    top = revenue[revenue["total_revenue"] == revenue["total_revenue"].max()]
    result = t["supplier"].merge(top, left_on="s_suppkey", right_on="supplier_no")
    columns = ["s_suppkey", "s_name", "s_address", "s_phone", "total_revenue"]
    return _finish(result, columns, ["s_suppkey"])


def q16(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    part, supplier = t["part"], t["supplier"]
    complaints = supplier[supplier["s_comment"].str.contains("Customer.*Complaints", regex=True)][
        ["s_suppkey"]
    ].assign(complaint=True)
    joined = (
        part[
            (part["p_brand"] != "Brand#45")
            & ~part["p_type"].str.startswith("MEDIUM POLISHED")
            & part["p_size"].isin([49, 14, 23, 45, 19, 3, 36, 9])
        ]
        .merge(t["partsupp"], left_on="p_partkey", right_on="ps_partkey")
        .merge(complaints, left_on="ps_suppkey", right_on="s_suppkey", how="left")
    )
    joined = joined[joined["complaint"].isna()]
    keys = ["p_brand", "p_type", "p_size"]
    result = joined.groupby(keys)["ps_suppkey"].nunique().rename("supplier_cnt").reset_index()
    return _finish(
        result, [*keys, "supplier_cnt"], ["supplier_cnt", *keys], [False, True, True, True]
    )


def q17(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    import pandas as pd

    part = t["part"]
    lines = part[(part["p_brand"] == "Brand#23") & (part["p_container"] == "MED BOX")].merge(
        t["lineitem"], left_on="p_partkey", right_on="l_partkey"
    )
    small = (
        (0.2 * lines.groupby("p_partkey")["l_quantity"].mean()).rename("small_qty").reset_index()
    )
    joined = lines.merge(small, on="p_partkey")
    joined = joined[joined["l_quantity"] < joined["small_qty"]]
    return pd.DataFrame({"avg_yearly": [joined["l_extendedprice"].sum().compute() / 7.0]})


def q18(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    lineitem = t["lineitem"]
    order_qty = lineitem.groupby("l_orderkey")["l_quantity"].sum().reset_index()
    large_orders = order_qty[order_qty["l_quantity"] > 300][["l_orderkey"]]
    joined = (
        t["orders"]
        .merge(large_orders, left_on="o_orderkey", right_on="l_orderkey")
        .drop(columns="l_orderkey")
        .merge(t["customer"], left_on="o_custkey", right_on="c_custkey")
        .merge(lineitem, left_on="o_orderkey", right_on="l_orderkey")
    )
    keys = ["c_name", "c_custkey", "o_orderkey", "o_orderdate", "o_totalprice"]
    result = joined.groupby(keys)["l_quantity"].sum().rename("sum_qty").reset_index()
    return _finish(result, [*keys, "sum_qty"], ["o_totalprice", "o_orderdate"], [False, True], 100)


def q19(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    import pandas as pd

    lineitem = t["lineitem"]
    joined = lineitem[
        lineitem["l_shipmode"].isin(["AIR", "AIR REG"])
        & (lineitem["l_shipinstruct"] == "DELIVER IN PERSON")
    ].merge(t["part"], left_on="l_partkey", right_on="p_partkey")

    def branch(brand: str, containers: list[str], low_qty: int, max_size: int) -> dd.Series:
        return (
            (joined["p_brand"] == brand)
            & joined["p_container"].isin(containers)
            & (joined["l_quantity"] >= low_qty)
            & (joined["l_quantity"] <= low_qty + 10)
            & (joined["p_size"] >= 1)
            & (joined["p_size"] <= max_size)
        )

    selected = joined[
        branch("Brand#12", ["SM CASE", "SM BOX", "SM PACK", "SM PKG"], 1, 5)
        | branch("Brand#23", ["MED BAG", "MED BOX", "MED PKG", "MED PACK"], 10, 10)
        | branch("Brand#34", ["LG CASE", "LG BOX", "LG PACK", "LG PKG"], 20, 15)
    ]
    return pd.DataFrame({"revenue": [_disc_price(selected).sum().compute()]})


def q20(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    part, lineitem, nation = t["part"], t["lineitem"], t["nation"]
    forest_parts = part[part["p_name"].str.startswith("forest")][["p_partkey"]]
    lines = lineitem[
        (lineitem["l_shipdate"] >= _day("1994-01-01"))
        & (lineitem["l_shipdate"] < _day("1995-01-01"))
    ]
    shipped = lines.groupby(["l_partkey", "l_suppkey"])["l_quantity"].sum().reset_index()
    shipped = shipped.assign(half_qty=0.5 * shipped["l_quantity"])
    excess = (
        t["partsupp"]
        .merge(forest_parts, left_on="ps_partkey", right_on="p_partkey")
        .merge(shipped, left_on=["ps_partkey", "ps_suppkey"], right_on=["l_partkey", "l_suppkey"])
    )
    excess_suppliers = excess[excess["ps_availqty"] > excess["half_qty"]][
        ["ps_suppkey"]
    ].drop_duplicates()
    result = (
        t["supplier"]
        .merge(nation[nation["n_name"] == "CANADA"], left_on="s_nationkey", right_on="n_nationkey")
        .merge(excess_suppliers, left_on="s_suppkey", right_on="ps_suppkey")
    )
    return _finish(result, ["s_name", "s_address"], ["s_name"])


def q21(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    lineitem, orders, nation = t["lineitem"], t["orders"], t["nation"]
    late = lineitem[lineitem["l_receiptdate"] > lineitem["l_commitdate"]]
    suppliers_per_order = (
        lineitem.groupby("l_orderkey")["l_suppkey"].nunique().rename("n_supp").reset_index()
    )
    late_suppliers_per_order = (
        late.groupby("l_orderkey")["l_suppkey"].nunique().rename("n_late_supp").reset_index()
    )
    saudi_suppliers = t["supplier"].merge(
        nation[nation["n_name"] == "SAUDI ARABIA"], left_on="s_nationkey", right_on="n_nationkey"
    )
    joined = (
        late.merge(saudi_suppliers, left_on="l_suppkey", right_on="s_suppkey")
        .merge(orders[orders["o_orderstatus"] == "F"], left_on="l_orderkey", right_on="o_orderkey")
        .merge(
            suppliers_per_order[suppliers_per_order["n_supp"] > 1],
            on="l_orderkey",
        )
        .merge(
            late_suppliers_per_order[late_suppliers_per_order["n_late_supp"] == 1],
            on="l_orderkey",
        )
    )
    result = joined.groupby("s_name").size().rename("numwait").reset_index()
    return _finish(result, ["s_name", "numwait"], ["numwait", "s_name"], [False, True], 100)


def q22(t: DaskTables, scale_factor: float = 1.0) -> pd.DataFrame:
    customer = t["customer"]
    customer = customer.assign(cntrycode=customer["c_phone"].str.slice(0, 2))
    candidates = customer[customer["cntrycode"].isin(["13", "31", "23", "29", "30", "18", "17"])]
    average = candidates[candidates["c_acctbal"] > 0.0]["c_acctbal"].mean()
    customers_with_orders = t["orders"][["o_custkey"]].drop_duplicates().assign(has_orders=True)
    rich = candidates[candidates["c_acctbal"] > average].merge(
        customers_with_orders, left_on="c_custkey", right_on="o_custkey", how="left"
    )
    rich = rich[rich["has_orders"].isna()]
    result = (
        rich.groupby("cntrycode")
        .agg(numcust=("c_custkey", "count"), totacctbal=("c_acctbal", "sum"))
        .reset_index()
    )
    return _finish(result, ["cntrycode", "numcust", "totacctbal"], ["cntrycode"])


DASK_QUERIES: Final[dict[int, DaskQuery]] = {
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
"""Query number (1..22) to the function that runs it with ``dask.dataframe``."""
