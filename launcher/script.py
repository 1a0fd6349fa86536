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


def _open_clients() -> set[int]:
    """Ids of the Dask clients alive in this process (none if distributed was never imported)."""
    if "distributed" not in sys.modules:
        return set()
    from distributed import Client

    return {id(client) for client in list(Client._instances) if client.status != "closed"}


def _close_clients_left_open(before: set[int]) -> None:
    """Close the clients the script opened and left open, before the cluster goes away.

    Only the script's own: clients that existed before it ran (a test's, an embedding
    program's) are not ours to close.
    """
    if "distributed" not in sys.modules:
        return
    from distributed import Client

    for client in list(Client._instances):
        if id(client) not in before and client.status != "closed":
            client.close()


def run_script(script: str, args: tuple[str, ...]) -> int:
    """Run ``script`` (a path, or ``-m module``) as ``__main__`` with ``sys.argv`` set.

    Returns the exit status: 0, the ``SystemExit`` code, 1 after an exception (traceback printed
    to stderr), 130 after ``KeyboardInterrupt``.
    """
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    clients_before = _open_clients()
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
        _close_clients_left_open(clients_before)
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
