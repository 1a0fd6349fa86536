"""Stand-in of ``cudf_polars.engine`` (see the package docstring)."""
