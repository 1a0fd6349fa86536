#!/usr/bin/env bash
# Issue 14 on a real GPU, in two calls of at most 10 minutes each:
#   benchmarks/device/verify_device_backend.sh tests   # install, pytest -m gpu at SF1, SF10 data
#   SF=10 benchmarks/device/verify_device_backend.sh bench   # the TPC-H bar, 1 and 2 ranks per GPU
#   benchmarks/device/verify_device_backend.sh quick   # one call: pytest -m gpu and the bar at SF1
#   benchmarks/device/verify_device_backend.sh reliability   # flat memory, kill -9, Ctrl-C (SF1)
# The CPU packages (polars, dask, distributed, tpchgen-cli, ...) are installed by an earlier
# verify_cpu_speed.sh call that carried .whl-cpu; the GPU ones arrive as /tmp/wheels.tar,
# appended part by part by earlier calls. Here,
#   pip download --no-deps (device README flags) of
#   cudf-polars-cu13==26.10.2 pylibcudf-cu13==26.10.2 libcudf-cu13==26.10.2
#   cudf-streaming-cu13==26.10.2 libcudf-streaming-cu13==26.10.2 kvikio-cu13==26.10.0
#   libkvikio-cu13==26.10.0 rmm-cu13==26.10.0 librmm-cu13==26.10.0 rapidsmpf-cu13==26.10.0
#   librapidsmpf-cu13==26.10.0 rapids-logger==0.3.* nvidia-libnvcomp-cu13==5.3.0.16
#   ucxx-cu13==0.52.0 libucxx-cu13==0.52.0 "libucx-cu13>=1.21,<1.22" "nvidia-nvjitlink==13.5.*"
#   nvtx   (18 wheels, 431 MiB; all are on PyPI) into .whl-gpu/, then
#   tar -cf /tmp/wheels.tar -C .whl-gpu . && split -b 62M -d /tmp/wheels.tar .xfer/part
#   and one call per part (7), carrying .xfer/partNN: cat .xfer/partNN >> /tmp/wheels.tar
# The machine stays warm 30 s between calls: have the next call ready.
# Every step logs to $OUT/<step>.log.
set -uo pipefail
phase="${1:?usage: verify_device_backend.sh tests|bench|quick|reliability}"
if [ ! -d /tmp/site/cudf_polars ]; then
  mkdir -p /tmp/wheels && tar -xf /tmp/wheels.tar -C /tmp/wheels || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site /tmp/wheels/*.whl || exit 1
fi
source "$(dirname "$0")/steps.sh"
export POLARS_HPC_TPCH_CACHE=/tmp/tpch
sf="${SF:-10}"
nvidia-smi -L

case "$phase" in
tests)
  step import python3 -c "import cudf_polars, rapidsmpf, ucxx, polars, distributed; print(cudf_polars.__version__, polars.__version__, distributed.__version__)"
  POLARS_HPC_GPU_TEST_SF=1 step tests timeout 300 python3 -m pytest -m gpu -q -p no:cacheprovider \
    tests/tpch/test_gpu_runner.py::test_device_engine_names_its_memory_resource_and_engine \
    "tests/tpch/test_gpu_runner.py::test_all_22_queries_run_device_resident_and_agree_with_polars[2]"
  step "data-sf$sf" timeout 200 python3 -c "from benchmarks.tpch.data import ensure_tpch_data as e; print(e($sf))"
  ;;
bench)
  step "bench-sf$sf-1" timeout 330 python3 -m benchmarks.tpch.gpu --scale-factor "$sf" --repeat 2
  step "bench-sf$sf-2" timeout 240 python3 -m benchmarks.tpch.gpu --scale-factor "$sf" --repeat 2 \
    --ranks-per-gpu 2 --engines anchor,ours
  ;;
quick)
  step import python3 -c "import cudf_polars, rapidsmpf, ucxx, polars, distributed; print(cudf_polars.__version__, polars.__version__, distributed.__version__)"
  POLARS_HPC_GPU_TEST_SF=1 step tests timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider \
    tests/tpch/test_gpu_runner.py::test_device_engine_names_its_memory_resource_and_engine \
    "tests/tpch/test_gpu_runner.py::test_all_22_queries_run_device_resident_and_agree_with_polars[2]"
  step bench-sf1-1 timeout 200 python3 -m benchmarks.tpch.gpu --scale-factor 1 --repeat 1
  ;;
reliability)
  POLARS_HPC_GPU_TEST_SF=1 step reliability timeout 420 python3 -m pytest -m gpu -q -s \
    -p no:cacheprovider tests/tpch/test_gpu_reliability.py
  ;;
*) echo "unknown phase $phase: tests, bench, quick or reliability" >&2; exit 2 ;;
esac
