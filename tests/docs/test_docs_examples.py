"""Every code block in docs/*.md (and the README's "Use it" block) runs, so the docs stay true.

- ```python blocks run the way a user runs them: a page's python blocks, in order, are one
  script (a page reads like one session), written to a file and started with
  ``python <page>.py`` in a fresh process. Pytest's process never executes them: a block that
  only works imported (a missing ``if __name__ == "__main__":`` where one is needed, a worker
  re-running the script) fails here as it fails for a user. A failure names the page line.
- ```bash blocks run with ``bash -euo pipefail`` in a scratch directory shared by the page's
  shell blocks (and the page's script, which runs first), with this virtual environment's
  ``python`` first on ``PATH``.
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

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
BLOCK = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)
RUNNABLE: Final = ("python", "bash", "console")
SHELL_TIMEOUT_S: Final = 120
SCRIPT_TIMEOUT_S: Final = 420
"""A page's script starts several clusters; the user guide's takes ~40 s on the 2-core CI VM."""


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


class PageScript(NamedTuple):
    text: str
    starts: list[tuple[int, int]]
    """``(script line, page line)`` where each block's code begins."""


def page_script(page_name: str, blocks: list[Block]) -> PageScript:
    r"""The page's python blocks, in order, as one script; a comment names each block's line.

    >>> script = page_script("p.md", [Block("python", "a = 1\n", 3), Block("python", "b = a\n", 9)])
    >>> print(script.text, end="")
    # ---- p.md line 3 ----
    a = 1
    # ---- p.md line 9 ----
    b = a
    >>> script.starts
    [(2, 4), (4, 10)]
    """
    lines: list[str] = []
    starts: list[tuple[int, int]] = []
    for block in blocks:
        if block.language != "python":
            continue
        lines.append(f"# ---- {page_name} line {block.line} ----")
        starts.append((len(lines) + 1, block.line + 1))
        lines.extend(block.code.splitlines())
    return PageScript("\n".join(lines) + "\n" if lines else "", starts)


def page_line(script: PageScript, script_name: str, stderr: str) -> str:
    """``page.md line N``: where the traceback's last frame in the script points, on the page."""
    frames = re.findall(rf'File ".*{re.escape(script_name)}", line (\d+)', stderr)
    if not frames or not script.starts:
        return "the page's python blocks"
    line = int(frames[-1])
    start, page_start = max((s for s in script.starts if s[0] <= line), default=script.starts[0])
    return f"line {page_start + line - start}"


def run_script(
    path: Path, cwd: Path, timeout_s: float = SCRIPT_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """``python path`` in a fresh process, as a user starts a saved example."""
    return subprocess.run(
        [sys.executable, path.name],
        cwd=cwd,
        env=_shell_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _run_page_script(page: Path, scratch: Path) -> None:
    script = page_script(page.name, page_blocks(page))
    if not script.text:
        return
    path = scratch / f"{page.stem.replace('-', '_')}_examples.py"
    path.write_text(script.text)
    done = run_script(path, scratch)
    if done.returncode != 0:
        where = page_line(script, path.name, done.stderr)
        raise AssertionError(
            f"{page.name} {where}: `python {path.name}` (the page's python blocks as one script) "
            f"failed with status {done.returncode}:\nstdout:\n{done.stdout[-4000:]}\n"
            f"stderr:\n{done.stderr[-8000:]}"
        )


def _run_shell_block(block: Block, page: Path, scratch: Path) -> None:
    where = f"{page.name} line {block.line} ({block.language})"
    if block.language == "bash":
        _run_shell(block.code, scratch, where)
        return
    for command, expected in _console_commands(block.code):
        printed = _run_shell(command, scratch, where).splitlines()
        unmatched = [line for line in expected if not _matches(line, printed)]
        assert not unmatched, (
            f"{where}: `{command}` printed no line like {unmatched}; it printed:\n"
            + "\n".join(printed)
        )


@pytest.mark.timeout(SCRIPT_TIMEOUT_S + 300)
@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_page_examples_run(page, tmp_path):
    _run_page_script(page, tmp_path)
    for block in page_blocks(page):
        if block.language != "python":
            _run_shell_block(block, page, tmp_path)


README_DATA: Final = "/data/dataset/*.parquet"
"""The path the README's "Use it" block reads; the test gives it generated data there."""


def readme_use_it_block(readme: str) -> str:
    """The python block under the README's "## Use it" heading."""
    section = readme.split("## Use it", 1)[1].split("\n## ", 1)[0]
    blocks = [m["code"] for m in BLOCK.finditer(section) if m["info"].split()[:1] == ["python"]]
    assert len(blocks) == 1, "the README's Use it section should have exactly one python block"
    return blocks[0]


@pytest.mark.timeout(SCRIPT_TIMEOUT_S + 60)
def test_readme_use_it_block_runs_as_a_script(tmp_path):
    """The README's first example, saved as a file and run with ``python``.

    Its one change: ``/data/dataset/*.parquet`` (data a reader has, CI has not) becomes a
    generated dataset with the columns it reads. The test asserts the path occurs exactly once,
    so a README that reads something else fails here instead of running half-checked.
    """
    import polars as pl

    code = readme_use_it_block((REPO / "README.md").read_text())
    assert code.count(README_DATA) == 1, f"the README's example no longer reads {README_DATA}"
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for part in range(3):
        pl.DataFrame(
            {"customer_id": [i % 10 for i in range(500)], "amount": [float(i) for i in range(500)]}
        ).write_parquet(dataset / f"part-{part}.parquet")
    path = tmp_path / "use_it.py"
    path.write_text(code.replace(README_DATA, str(dataset / "*.parquet")))
    done = run_script(path, tmp_path)
    assert done.returncode == 0, f"README Use it block failed:\n{done.stderr[-8000:]}"
    assert "shape: (10, 2)" in done.stdout, done.stdout  # 10 customers, summed amounts


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
