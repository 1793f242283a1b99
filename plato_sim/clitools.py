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
import warnings
from collections.abc import Callable

from plato_sim.errors import PlatoFocusError, PlatoFocusWarning

__all__ = [
    "float_list",
    "fix_negative_values",
    "add_verbosity",
    "setup_logging",
    "run_command",
    "EXIT_USAGE",
]

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


def add_verbosity(ap: argparse.ArgumentParser) -> None:
    """``-v`` (debug messages) and ``-q`` (warnings and errors only) on a command line."""
    g = ap.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="also show debug messages")
    g.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only")


class _Formatter(logging.Formatter):
    """Progress lines as they are; warnings and errors prefixed with the program and level."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{self.prog}: {record.levelname.lower()}: {msg}"
        return msg


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the message (not at set-up)."""

    _plato_focus = True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(prog: str, args: argparse.Namespace) -> None:
    """Library progress (``logging``) to stderr at the level that ``-v``/``-q`` chose."""
    level = logging.INFO
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.WARNING
    root = logging.getLogger()
    if not any(getattr(h, "_plato_focus", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter(prog))
        root.addHandler(handler)
    root.setLevel(level)


def run_command(prog: str, args: argparse.Namespace) -> int:
    """Run ``args.func(args)``; a project or OS error becomes one line on stderr and exit 2.

    The library's :class:`~plato_sim.errors.PlatoFocusWarning` s are not printed twice: the
    commands print the warnings their reports list.
    """
    setup_logging(prog, args)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PlatoFocusWarning)
            return int(func(args) or 0)
    except (PlatoFocusError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{prog} {args.command}: {message}", file=sys.stderr)
        return EXIT_USAGE
