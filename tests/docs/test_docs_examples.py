"""Every code block in docs/*.md runs, so the docs stay true.

- ```python blocks of one page run in order in one namespace (a page reads like one session).
- ```bash blocks run with ``bash -euo pipefail`` in a scratch directory shared by the page's
  shell blocks, with this virtual environment's ``python`` first on ``PATH``.
- ```console blocks: each ``$ command`` line runs the same way; the lines after it are the
  output, and each must match a line the command printed (``...`` matches anything).
- ``no-run`` after the language (```bash no-run) marks a block that needs what CI cannot have
  (GPUs, dask-cuda, a Slurm allocation, a remote scheduler); the text around it must say so.
- Other info strings (```text, ```dot, a bare ```) are shown, not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Final, NamedTuple

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)
RUNNABLE: Final = ("python", "bash", "console")
SHELL_TIMEOUT_S: Final = 120


class Block(NamedTuple):
    language: str
    code: str
    line: int


def page_blocks(page: Path) -> list[Block]:
    """The page's blocks that run, with the line each starts on."""
    text = page.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        words = match["info"].split()
        if words and words[0] in RUNNABLE and "no-run" not in words[1:]:
            blocks.append(Block(words[0], match["code"], text.count("\n", 0, match.start()) + 1))
    return blocks


REASON = re.compile(r"not (be )?(executed|execute|run)", re.IGNORECASE)


def no_run_blocks_without_reason(page: Path) -> list[int]:
    """Lines of ``no-run`` blocks whose nearby text (6 lines before, 3 after) says not why."""
    lines = page.read_text().splitlines()
    missing, number = [], 0
    while number < len(lines):
        if not lines[number].startswith("```"):
            number += 1
            continue
        end = next(i for i in range(number + 1, len(lines)) if lines[i].startswith("```"))
        if "no-run" in lines[number].split():
            near = " ".join(lines[max(0, number - 6) : number] + lines[end + 1 : end + 4])
            if not REASON.search(near):
                missing.append(number + 1)
        number = end + 1
    return missing


PAGES = sorted(page for page in DOCS.glob("*.md") if page_blocks(page))


def _shell_env() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "UCX_WARN_UNUSED_ENV_VARS": "n",
        "PYTHONPATH": str(DOCS.parent),
    }


def _run_shell(command: str, cwd: Path, where: str) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=_shell_env(),
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{where} failed with status {done.returncode}:\n{command}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done.stdout + done.stderr


def _console_commands(code: str) -> list[tuple[str, list[str]]]:
    """``[(command, expected output lines)]`` of a console block."""
    commands: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands and line.strip():
            commands[-1][1].append(line.rstrip())
    return commands


def _matches(expected: str, printed: list[str]) -> bool:
    """Whether a printed line reads like ``expected``: ``...`` is anything, runs of spaces are
    one (tables align their columns to the widest cell of the run)."""
    parts = (" ".join(part.split()) for part in expected.split("..."))
    pattern = ".*".join(re.escape(part) for part in parts)
    return any(re.fullmatch(pattern, " ".join(line.split())) for line in printed)


def _run_block(block: Block, page: Path, namespace: dict[str, object], scratch: Path) -> None:
    where = f"{page.name} line {block.line} ({block.language})"
    if block.language == "python":
        try:
            exec(compile(block.code, where, "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{where} failed:\n{block.code}") from error
    elif block.language == "bash":
        _run_shell(block.code, scratch, where)
    else:
        for command, expected in _console_commands(block.code):
            printed = _run_shell(command, scratch, where).splitlines()
            unmatched = [line for line in expected if not _matches(line, printed)]
            assert not unmatched, (
                f"{where}: `{command}` printed no line like {unmatched}; it printed:\n"
                + "\n".join(printed)
            )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_page_examples_run(page, tmp_path):
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for block in page_blocks(page):
        _run_block(block, page, namespace, tmp_path)


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda page: page.name)
def test_no_run_blocks_say_why(page):
    assert no_run_blocks_without_reason(page) == [], f"{page.name}: no-run blocks without a reason"


def test_the_user_guide_is_checked():
    assert "user-guide.md" in [page.name for page in PAGES]


def test_every_page_is_linked_from_the_index():
    index = (DOCS / "README.md").read_text()
    pages = {page.name for page in DOCS.glob("*.md")} - {"README.md"}
    assert sorted(name for name in pages if f"({name}" not in index) == []


def test_console_blocks_are_read_as_commands_and_output():
    code = "$ echo a\na\n\n$ true\n"
    assert _console_commands(code) == [("echo a", ["a"]), ("true", [])]
    assert _matches("pid ... done", ["pid 42 done"])
    assert not _matches("pid ... done", ["pid 42"])
    assert _matches("rank  host", ["rank    host  "])
