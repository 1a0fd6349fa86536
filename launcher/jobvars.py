"""How an argument becomes one word of a batch script: job variables expand, nothing else does.

Users write ``--scheduler-file $SCRATCH/sched-%j.json`` expecting the job's own id in the
name, as in their hand-written batch scripts and in sbatch's ``--output``. Quoting every word
(``shlex.quote``) kept ``$SCRATCH`` and ``%j`` literal; leaving words unquoted would also split,
glob and substitute commands. :func:`shell_word` double-quotes only the words that reference a
variable and escapes every other shell character in them.
"""

from __future__ import annotations

import re
import shlex
from typing import Final

__all__ = ["FILENAME_PATTERNS", "shell_word"]

FILENAME_PATTERNS: Final = (
    ("%j", "${SLURM_JOB_ID}"),
    ("%x", "${SLURM_JOB_NAME}"),
    ("%u", "${USER}"),
    ("%%", "%"),
)
"""sbatch's file-name patterns, expanded in launcher options as in ``--output``: the variable
each one becomes when the job runs (``%%`` is a literal ``%``)."""

_VARIABLE: Final = r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)"
_DOUBLE_QUOTED_SPECIALS: Final = str.maketrans({"\\": "\\\\", '"': '\\"', "`": "\\`", "$": "\\$"})


def shell_word(arg: str, *, filename_patterns: bool = False) -> str:
    """``arg`` as one word of the batch script: literal, except job variables.

    ``$NAME``/``${NAME}`` expand when the job runs; with ``filename_patterns``, so do sbatch's
    ``%j``, ``%x``, ``%u`` (:data:`FILENAME_PATTERNS`). Everything else stays literal.

    >>> print(shell_word("/data/tpch sf100"))
    '/data/tpch sf100'
    >>> print(shell_word("$SCRATCH/sched-%j.json", filename_patterns=True))
    "${SCRATCH}/sched-${SLURM_JOB_ID}.json"
    >>> print(shell_word("100% of `x`, $1 and %j"))
    '100% of `x`, $1 and %j'
    """
    patterns = dict(FILENAME_PATTERNS) if filename_patterns else {}
    pattern = "|".join([*(re.escape(key) for key in patterns), _VARIABLE])
    quoted, expands, at = [], False, 0
    for match in re.finditer(pattern, arg):
        quoted.append(arg[at : match.start()].translate(_DOUBLE_QUOTED_SPECIALS))
        at = match.end()
        name = match[1] or match[2]
        replacement = f"${{{name}}}" if name else patterns[match[0]]
        expands |= replacement.startswith("$")
        quoted.append(
            replacement
            if replacement.startswith("$")
            else replacement.translate(_DOUBLE_QUOTED_SPECIALS)
        )
    quoted.append(arg[at:].translate(_DOUBLE_QUOTED_SPECIALS))
    return (
        f'"{"".join(quoted)}"'
        if expands
        else shlex.quote(arg.replace("%%", "%") if patterns else arg)
    )
