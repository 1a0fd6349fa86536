"""The GPU backend: queries run device-resident on every worker's GPU.

:mod:`engine.gpu.device` drives cudf-polars' streaming engine with the engine's Dask client.
Nothing here imports :mod:`engine.executor`; :mod:`engine.backend` is the one module that picks
between the two backends.
"""
