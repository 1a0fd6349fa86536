"""Stand-in of ``cudf_polars.utils``."""
