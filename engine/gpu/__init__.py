"""The GPU backend: plans run on a rank's GPU.

Today it is the GPU *fragment* path: the CPU executor's plan walk with every fragment collected
by cudf-polars (:mod:`engine.gpu.fragments`). The device-resident backend (frames kept on the
GPU between stages, issue 14) will live here too. Nothing here imports :mod:`engine.executor`;
:mod:`engine.backend` is the one module that picks between the two.
"""
