"""Recorded machines: ``fixtures/<machine>/sysfs.tree`` materialized into a real directory tree.

A tree file lists ``path = content`` (a file) and ``path -> target`` (a relative symlink), one
per line, ``#`` for comments; the topology code reads the materialized tree as it reads /sys.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def write_sysfs_tree(tree_file: Path, root: Path) -> Path:
    """Create the files and symlinks ``tree_file`` lists under ``root``; return ``root``."""
    for number, line in enumerate(tree_file.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        if " -> " in line:
            path, target = line.split(" -> ", 1)
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).symlink_to(target)
        elif " = " in line:
            path, content = line.split(" = ", 1)
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(content + "\n")
        else:
            raise ValueError(f"{tree_file}:{number}: expected `path = content` or `path -> target`")
    return root


@pytest.fixture
def machine(tmp_path: Path) -> Callable[[str], Path]:
    """``machine("dgx_h100")`` gives the sysfs root of that recorded machine."""

    def build(name: str) -> Path:
        return write_sysfs_tree(FIXTURES / name / "sysfs.tree", tmp_path / name / "sys")

    return build
