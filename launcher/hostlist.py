"""Slurm's compressed host lists (``SLURM_NODELIST``): ``gpu[01-04,07],login1`` to host names.

The rendezvous runs on the first host of the job, so every rank must expand the list the same
way Slurm does, without calling ``scontrol`` (not installed on every compute image).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["expand_hostlist", "first_host"]

_RANGE: Final = re.compile(r"^(\d+)(?:-(\d+))?$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are outside brackets."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in Slurm host list {text!r}")
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in Slurm host list {text!r}")
    parts.append(text[start:])
    return [part for part in parts if part]


def _expand_ranges(spec: str, whole: str) -> list[str]:
    """``01-03,7`` to ``['01', '02', '03', '7']``, keeping zero padding."""
    values: list[str] = []
    for item in spec.split(","):
        match = _RANGE.match(item.strip())
        if match is None:
            raise ValueError(f"cannot parse range {item!r} in Slurm host list {whole!r}")
        low, high = match[1], match[2]
        if high is None:
            values.append(low)
            continue
        if int(high) < int(low):
            raise ValueError(f"range {item!r} runs backwards in Slurm host list {whole!r}")
        width = len(low)
        values += [str(number).zfill(width) for number in range(int(low), int(high) + 1)]
    return values


def _expand_one(pattern: str, whole: str) -> list[str]:
    """Expand one comma-free pattern; several bracket groups give their product."""
    opening = pattern.find("[")
    if opening < 0:
        return [pattern]
    closing = pattern.index("]", opening)
    prefix, ranges, rest = pattern[:opening], pattern[opening + 1 : closing], pattern[closing + 1 :]
    tails = _expand_one(rest, whole)
    return [prefix + value + tail for value in _expand_ranges(ranges, whole) for tail in tails]


def expand_hostlist(hostlist: str) -> list[str]:
    """Host names of a Slurm host list, in Slurm's order.

    >>> expand_hostlist("gpu[01-04,07]")
    ['gpu01', 'gpu02', 'gpu03', 'gpu04', 'gpu07']
    >>> expand_hostlist("login1,cn[8-10]")
    ['login1', 'cn8', 'cn9', 'cn10']
    """
    hosts: list[str] = []
    for pattern in _split_top_level(hostlist.strip()):
        hosts += _expand_one(pattern, hostlist)
    if not hosts:
        raise ValueError(f"Slurm host list {hostlist!r} names no host")
    return hosts


def first_host(hostlist: str) -> str:
    """The first host of a Slurm host list: where rank 0 runs under a block distribution.

    >>> first_host("node[3-5]")
    'node3'
    """
    return expand_hostlist(hostlist)[0]
