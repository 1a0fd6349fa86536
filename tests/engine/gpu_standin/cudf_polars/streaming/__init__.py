"""Stand-in of ``cudf_polars.streaming``."""
