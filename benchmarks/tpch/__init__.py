"""TPC-H on polars-hpc: data generation, the 22 queries (polars and dask.dataframe), a runner."""
