"""The scheduler's dashboard: a link only when it works, on a port that is free.

distributed starts an HTTP server with every scheduler, dashboard or not; left to its default it
takes port 8787, and warns "Port 8787 is already in use" whenever a second job shares the node,
even one started with ``--no-dashboard``. Without bokeh, the page behind the link only says
that Dask needs bokeh. So the launcher decides the address itself: the requested port when it
is free, else one the kernel picks; and prints a link only where bokeh can serve it.
"""

from __future__ import annotations

import socket
from typing import Final

__all__ = ["BOKEH_HINT", "dashboard_address", "dashboard_works", "free_or_any_port"]

BOKEH_HINT: Final = "pip install 'bokeh>=3.1.0' for the dashboard"
"""What to do when the dashboard cannot run (distributed's own requirement)."""


def dashboard_works() -> bool:
    """Whether distributed can serve its dashboard here (bokeh installed, new enough).

    The same import the scheduler makes: it fails without bokeh or with an older one.
    """
    try:
        import distributed.dashboard.scheduler  # noqa: F401
    except ImportError:
        return False
    return True


def free_or_any_port(host: str, port: int) -> int:
    """``port`` when it can be bound on ``host`` now, else ``0`` (the kernel picks one).

    The check races with other processes, but a lost race only brings back distributed's own
    fallback (and its warning); it never fails the job.
    """
    if port == 0:
        return 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return 0
    return port


def dashboard_address(host: str, port: int | None) -> tuple[bool, str]:
    """``(dashboard on, HTTP address)`` for a scheduler on ``host``; ``port=None``: off.

    The scheduler's HTTP server always starts, so an address is always given: without a
    dashboard it is port 0, which no other job can hold.
    """
    on = port is not None and dashboard_works()
    return on, f"{host}:{free_or_any_port(host, port) if on and port is not None else 0}"
