"""What both command lines share: value parsers and the one way a command fails.

A command either succeeds or prints **one line** ``PROG COMMAND: message`` on stderr and
exits with status 2, for every error of the project's family
(:class:`plato_sim.errors.PlatoFocusError`) and for operating-system errors on the user's
paths (a missing file, an unwritable folder).  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from plato_sim.errors import PlatoFocusError

__all__ = ["float_list", "fix_negative_values", "run_command", "EXIT_USAGE"]

#: exit status of a command that refused its input (argparse uses the same for bad usage)
EXIT_USAGE = 2


def float_list(text: str) -> list[float]:
    """Parse ``"a,b,c"`` (negative values allowed) into floats."""
    try:
        return [float(v) for v in text.split(",") if v.strip() != ""]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def fix_negative_values(argv: list[str]) -> list[str]:
    """Join ``--opt -1,2`` into ``--opt=-1,2`` so argparse does not take it for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" not in a and i + 1 < len(argv):
            nxt = argv[i + 1]
            if nxt.startswith("-") and len(nxt) > 1 and (nxt[1].isdigit() or nxt[1] == "."):
                out.append(f"{a}={nxt}")
                i += 2
                continue
        out.append(a)
        i += 1
    return out


def run_command(prog: str, args: argparse.Namespace) -> int:
    """Run ``args.func(args)``; a project or OS error becomes one line on stderr and exit 2."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format=f"{prog}: %(levelname)s: %(message)s")
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return int(func(args) or 0)
    except (PlatoFocusError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{prog} {args.command}: {message}", file=sys.stderr)
        return EXIT_USAGE
