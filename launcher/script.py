"""Run the user's script here as ``python script.py args...`` would, and say how it ended.

The script's exit status becomes every rank's exit status, so it is returned, never raised: an
exception prints its traceback here (once, on rank 0) and becomes status 1.
"""

from __future__ import annotations

import runpy
import sys
import traceback
from pathlib import Path

__all__ = ["exit_status_of", "run_script"]


def exit_status_of(code: object) -> int:
    """The process exit status ``SystemExit(code)`` stands for, as CPython maps it.

    >>> exit_status_of(None), exit_status_of(3), exit_status_of("bad input")
    (0, 3, 1)
    """
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _print_script_traceback(error: BaseException) -> None:
    """Print the traceback as ``python script.py`` would: without the launcher's own frames."""
    tb = error.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__)
        or tb.tb_frame.f_code.co_filename.startswith("<frozen runpy>")
    ):
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb)


def _close_clients_left_open() -> None:
    """Close Dask clients the script did not close, before the cluster goes away under them."""
    if "distributed" not in sys.modules:
        return
    from distributed.client import default_client

    for _ in range(100):
        try:
            client = default_client()
        except ValueError:
            return
        client.close()


def run_script(script: str, args: tuple[str, ...]) -> int:
    """Run ``script`` (a path, or ``-m module``) as ``__main__`` with ``sys.argv`` set.

    Returns the exit status: 0, the ``SystemExit`` code, 1 after an exception (traceback printed
    to stderr), 130 after ``KeyboardInterrupt``.
    """
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    module = script.removeprefix("-m ") if script.startswith("-m ") else None
    try:
        if module is not None:
            sys.argv = [module, *args]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            path = Path(script)
            if not path.is_file():
                print(f"python -m launcher.run: can't open file {script!r}", file=sys.stderr)
                return 2
            sys.argv = [script, *args]
            sys.path.insert(0, str(path.resolve().parent))
            runpy.run_path(script, run_name="__main__")
    except SystemExit as done:
        return exit_status_of(done.code)
    except KeyboardInterrupt as interrupt:
        _print_script_traceback(interrupt)
        return 130
    except BaseException as error:
        _print_script_traceback(error)
        return 1
    finally:
        sys.argv[:], sys.path[:] = saved_argv, saved_path
        _close_clients_left_open()
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
