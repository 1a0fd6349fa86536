"""Linux CPU list syntax (``0-3,8,10-11``), as sysfs and ``/proc/self/status`` write it."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["format_cpulist", "parse_cpulist"]


def parse_cpulist(text: str) -> frozenset[int]:
    r"""The CPUs a list names; an empty (or blank) list names none.

    >>> sorted(parse_cpulist("0-2,8,10-11\n"))
    [0, 1, 2, 8, 10, 11]
    >>> parse_cpulist("")
    frozenset()
    """
    cpus: set[int] = set()
    for item in text.strip().split(","):
        item = item.strip()
        if not item:
            continue
        first, _, last = item.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"cannot parse CPU list {text.strip()!r} at {item!r}") from None
        if high < low:
            raise ValueError(f"CPU list {text.strip()!r} has a descending range {item!r}")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """The shortest list syntax for ``cpus`` (ranges where contiguous).

    >>> format_cpulist([0, 1, 2, 3, 112, 113, 7])
    '0-3,7,112-113'
    >>> format_cpulist([])
    ''
    """
    ordered = sorted(set(cpus))
    items: list[str] = []
    start = 0
    for end in range(len(ordered)):
        if end + 1 == len(ordered) or ordered[end + 1] != ordered[end] + 1:
            low, high = ordered[start], ordered[end]
            items.append(str(low) if low == high else f"{low}-{high}")
            start = end + 1
    return ",".join(items)
