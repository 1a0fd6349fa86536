"""A user's script that is interrupted (SIGINT) while ``collect`` waits for its workers.

Run by ``test_faults.py`` as ``python interrupted_client.py MARKER_DIR``. It prints what the
test asserts: that ``KeyboardInterrupt`` reached the caller, that no rank went on past the
shuffle, and that the same engine then runs the next query correctly.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine
from engine.hardware_binding import HardwareBindingPolicy


def main(marker_dir: Path) -> int:
    import fault_udfs  # on PYTHONPATH in the test's subprocess (tests are no package)

    hold = functools.partial(fault_udfs.hold_until_released, marker_dir=str(marker_dir))
    reached = functools.partial(fault_udfs.mark_reached, marker_dir=str(marker_dir))
    query = (
        pl.LazyFrame({"k": [i % 5 for i in range(40)], "a": list(range(40))})
        .with_columns(pl.col("a").map_batches(hold, is_elementwise=True, return_dtype=pl.Int64))
        .group_by("k")
        .agg(pl.col("a").sum())
        .with_columns(pl.col("a").map_batches(reached, is_elementwise=True, return_dtype=pl.Int64))
    )
    options = {"comm_timeout_s": 30, "hardware_binding": HardwareBindingPolicy(enabled=False)}
    with DaskEngine(n_workers=2, engine_options=options) as engine:
        try:
            query.collect(engine=engine)
        except KeyboardInterrupt:
            print("KeyboardInterrupt reached the caller", flush=True)
        else:
            print("collect returned although interrupted", flush=True)
            return 1
        (marker_dir / "release").touch()  # the held fragments return; the ranks must stop
        start = time.monotonic()
        while any(engine.client.processing().values()):
            if time.monotonic() - start > 30:
                print(f"ranks still running: {engine.client.processing()}", flush=True)
                return 1
            time.sleep(0.05)
        print(f"workers idle {time.monotonic() - start:.2f} s after the release", flush=True)
        print(f"ranks that got past the shuffle: {len(list(marker_dir.glob('reached.*')))}")
        small = pl.LazyFrame({"k": [1, 2, 1], "v": [1, 2, 3]}).group_by("k").agg(pl.sum("v"))
        assert_frame_equal(small.collect(engine=engine), small.collect(), check_row_order=False)
        print("next query: correct", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
