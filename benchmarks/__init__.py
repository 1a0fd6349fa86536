"""Benchmarks of polars-hpc: workloads, their data generators and the scripts that time them."""
