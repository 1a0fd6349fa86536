"""A stand-in for cudf-polars where there is no GPU: the surface ``engine/gpu/device.py`` drives.

cudf-polars needs a GPU and the CUDA libraries, so CI cannot import it. This package has the
same module paths and the calls our device backend makes (``DaskEngine(dask_client=...,
executor_options=..., engine_options=...)``, ``collect`` through polars' engine protocol,
``shutdown``, the default singleton's ``shutdown``, ``MemoryResourceConfig``,
``HardwareBindingPolicy``, ``explain_query``) and runs queries with polars on the CPU. Like
cudf-polars it refuses what it cannot translate (here: Python UDFs) with cudf-polars' own
message, and it records on every worker what the bootstrap was given, so tests can check the
glue: backend choice, option mapping, refusals and their fallback, stats, explain, sinks.
It is found only by tests that put this folder on ``sys.path``.
"""
