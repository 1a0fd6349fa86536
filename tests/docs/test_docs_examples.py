"""Every ```python block in docs/*.md runs, so the docs stay true.

Blocks of one page run in order in one namespace (a page reads like one session). A block whose
info string is ``python no-run`` needs what CI cannot have (GPUs, dask-cuda, a remote scheduler)
and must say so in the text around it; everything else runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)


def runnable_blocks(page: Path) -> list[str]:
    return [m["code"] for m in BLOCK.finditer(page.read_text()) if m["info"].strip() == "python"]


PAGES = sorted(page for page in DOCS.glob("*.md") if runnable_blocks(page))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_page_examples_run(page):
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for index, code in enumerate(runnable_blocks(page)):
        try:
            exec(compile(code, f"{page.name}[block {index}]", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{page.name}: python block {index} failed:\n{code}") from error


def test_the_user_guide_is_checked():
    assert "user-guide.md" in [page.name for page in PAGES]
