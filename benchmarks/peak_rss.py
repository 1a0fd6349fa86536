"""A process's peak resident memory, resettable, for per-query memory columns (Linux only).

``ru_maxrss`` only grows over a process's life, so it cannot tell one query's peak from an
earlier one's. Linux can reset the peak: writing ``5`` to ``/proc/self/clear_refs`` sets
``VmHWM`` back to the current RSS, so reset, run, read gives that run's own peak.
"""

from __future__ import annotations

__all__ = ["peak_rss_bytes", "reset_peak_rss", "status_kib"]


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, ...) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def reset_peak_rss() -> None:
    """Make this process's peak RSS its current RSS."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def peak_rss_bytes() -> int:
    """This process's peak RSS since it started or since :func:`reset_peak_rss`."""
    return status_kib("VmHWM") * 1024
