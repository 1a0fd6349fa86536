"""The client's polars settings from the environment, applied on the ranks for one query.

polars reads many ``POLARS_*`` variables while it plans and runs a query (for example
``POLARS_PUSHDOWN_OPT_MAINTAIN_ERRORS``, which keeps errors that predicate pushdown would
skip). A user who sets one in the client process expects the query to honour it, as polars in
one process would; the ranks run in other processes, so each query carries the client's
``POLARS_*`` variables and the rank applies them while it runs, then restores its own.

Variables fixed when a process starts, naming the client's own paths, or switching on the
client's query monitoring are not carried.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Final

__all__ = ["applied_polars_environ", "client_polars_environ"]

_PREFIX: Final = "POLARS_"
_NOT_CARRIED: Final = frozenset(
    {
        "POLARS_MAX_THREADS",  # the pool is sized once per process (num_streaming_threads)
        "POLARS_TEMP_DIR",  # a path on the client's host
        "POLARS_FORCE_ASYNC",
    }
)
_NOT_CARRIED_PREFIXES: Final = (
    "POLARS_HPC_",  # our own options, resolved on the client into StreamingOptions already
    "POLARS_QUERY_MONITORING",  # the client's query observer; fragments are not its queries
)

PolarsEnviron = tuple[tuple[str, str], ...]


def _carried(name: str) -> bool:
    return (
        name.startswith(_PREFIX)
        and not name.startswith(_NOT_CARRIED_PREFIXES)
        and name not in _NOT_CARRIED
    )


def client_polars_environ(environ: Mapping[str, str]) -> PolarsEnviron:
    """The ``POLARS_*`` variables a query carries to the ranks (sorted, for repeatable plans).

    >>> client_polars_environ({"POLARS_VERBOSE": "1", "POLARS_MAX_THREADS": "4", "HOME": "/"})
    (('POLARS_VERBOSE', '1'),)
    """
    return tuple(sorted((k, v) for k, v in environ.items() if _carried(k)))


@contextlib.contextmanager
def applied_polars_environ(
    wanted: PolarsEnviron, environ: MutableMapping[str, str] | None = None
) -> Iterator[None]:
    """The rank's ``POLARS_*`` variables are the client's while the block runs.

    A carried variable the client does not have is unset for the query; everything is put
    back afterwards, so the worker's next query starts from its own environment.

    >>> env = {"POLARS_VERBOSE": "0", "POLARS_MAX_THREADS": "2"}
    >>> with applied_polars_environ((("POLARS_FMT_MAX_ROWS", "3"),), env):
    ...     sorted(env)
    ['POLARS_FMT_MAX_ROWS', 'POLARS_MAX_THREADS']
    >>> sorted(env.items())
    [('POLARS_MAX_THREADS', '2'), ('POLARS_VERBOSE', '0')]
    """
    env = os.environ if environ is None else environ
    saved = {name: value for name, value in env.items() if _carried(name)}
    for name in saved:
        del env[name]
    env.update(dict(wanted))
    try:
        yield
    finally:
        for name in [n for n in env if _carried(n)]:
            del env[name]
        env.update(saved)
