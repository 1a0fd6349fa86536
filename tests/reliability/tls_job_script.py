"""The script of the TLS job in ``test_security.py``: publish the address, wait for the test.

``python -m launcher.run ... tls_job_script.py MARKER_DIR``: writes the scheduler address the
launcher gave it to ``MARKER_DIR/address``, then keeps the job up until ``MARKER_DIR/done``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import dask.config


def main(marker_dir: Path) -> int:
    address = dask.config.get("scheduler-address")
    (marker_dir / "address.partial").write_text(address)
    (marker_dir / "address.partial").rename(marker_dir / "address")
    deadline = time.monotonic() + 90
    while not (marker_dir / "done").exists():
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
