"""Apply a binding to the running worker process: CPU affinity, NUMA memory policy, env.

Linux keeps CPU affinity and memory policy per thread, and a new thread inherits both from the
thread that creates it. So affinity is set on every thread of the process
(``/proc/self/<tid>``), and the memory policy on the calling thread: the worker's event-loop
thread, which creates the executor threads and (through the engine) polars' thread pool.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Iterable, MutableMapping
from typing import Final

__all__ = [
    "MPOL_PREFERRED",
    "THREAD_POOL_ENV",
    "MemoryPolicyUnavailable",
    "get_memory_policy",
    "process_affinity",
    "set_preferred_numa_node",
    "set_process_affinity",
    "size_thread_pools",
]

MPOL_PREFERRED: Final = 1
"""``set_mempolicy`` mode: allocate on the node, fall back elsewhere when it is full."""

THREAD_POOL_ENV: Final = (
    "POLARS_MAX_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)
"""Thread pools sized to the bound CPUs (each is read when its pool starts)."""

_MEMPOLICY_SYSCALLS: Final = {  # machine: (set_mempolicy, get_mempolicy)
    "x86_64": (238, 239),
    "aarch64": (237, 236),
    "ppc64le": (261, 260),
}
_MASK_BITS: Final = 4096


class MemoryPolicyUnavailable(OSError):
    """``set_mempolicy`` cannot run here (architecture, seccomp, missing capability)."""


def _task_ids() -> list[int]:
    try:
        return sorted(int(tid) for tid in os.listdir("/proc/self/task"))
    except FileNotFoundError:
        return [0]


def set_process_affinity(cpus: Iterable[int]) -> None:
    """Pin every thread of this process to ``cpus`` (threads started later inherit it)."""
    wanted = set(cpus)
    for tid in _task_ids():
        try:
            os.sched_setaffinity(tid, wanted)
        except ProcessLookupError:
            continue


def process_affinity() -> dict[int, frozenset[int]]:
    """Each live thread's CPU affinity, read back from the kernel."""
    found: dict[int, frozenset[int]] = {}
    for tid in _task_ids():
        try:
            found[tid] = frozenset(os.sched_getaffinity(tid))
        except ProcessLookupError:
            continue
    return found


def _syscall_numbers() -> tuple[int, int]:
    machine = platform.machine()
    if machine not in _MEMPOLICY_SYSCALLS:
        raise MemoryPolicyUnavailable(
            errno.ENOSYS, f"set_mempolicy syscall number unknown for {machine}"
        )
    return _MEMPOLICY_SYSCALLS[machine]


def _mask_type() -> type[ctypes.Array[ctypes.c_ulong]]:
    return ctypes.c_ulong * (_MASK_BITS // (8 * ctypes.sizeof(ctypes.c_ulong)))


def _syscall(number: int, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(ctypes.c_long(number), *args) != 0:
        code = ctypes.get_errno()
        raise MemoryPolicyUnavailable(code, os.strerror(code))


def set_preferred_numa_node(node: int) -> None:
    """Prefer NUMA ``node`` for this thread's memory (``MPOL_PREFERRED``)."""
    set_number, _ = _syscall_numbers()
    bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    mask = _mask_type()()
    mask[node // bits] = 1 << (node % bits)
    _syscall(set_number, ctypes.c_int(MPOL_PREFERRED), mask, ctypes.c_ulong(_MASK_BITS + 1))


def get_memory_policy() -> tuple[int, frozenset[int]]:
    """This thread's memory policy mode and nodes, from ``get_mempolicy``."""
    _, get_number = _syscall_numbers()
    bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    mode = ctypes.c_int(0)
    mask = _mask_type()()
    _syscall(
        get_number,
        ctypes.byref(mode),
        mask,
        ctypes.c_ulong(_MASK_BITS),
        ctypes.c_void_p(None),
        ctypes.c_ulong(0),
    )
    nodes = {i * bits + b for i, word in enumerate(mask) for b in range(bits) if word >> b & 1}
    return mode.value, frozenset(nodes)


def size_thread_pools(environ: MutableMapping[str, str], threads: int) -> dict[str, str]:
    """Set every pool's thread count to ``threads``; return what was set."""
    values = dict.fromkeys(THREAD_POOL_ENV, str(threads))
    environ.update(values)
    return values
