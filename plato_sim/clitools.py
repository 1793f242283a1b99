"""What both command lines share: value parsers and the one way a command fails.

A command either succeeds or prints **one line** ``PROG COMMAND: message`` on stderr and
exits with status 2, for every error of the project's family
(:class:`plato_sim.errors.PlatoFocusError`) and for operating-system errors on the user's
paths (a missing file, an unwritable folder).  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from plato_sim.errors import PlatoFocusError, PlatoFocusWarning

__all__ = [
    "ArgumentParser",
    "HelpFormatter",
    "int_in",
    "float_in",
    "finite_float",
    "temperature_degC",
    "finite_float_list",
    "int_list_in",
    "existing_file",
    "existing_dir",
    "output_file",
    "SEED_MAX",
    "float_list",
    "fix_negative_values",
    "add_verbosity",
    "setup_logging",
    "run_command",
    "EXIT_USAGE",
]

#: exit status of a command that refused its input (argparse uses the same for bad usage)
EXIT_USAGE = 2
#: largest seed the commands accept (numpy and torch take any seed in [0, 2**63))
SEED_MAX = 2**63 - 1
#: absolute zero (degC): the lower bound of every temperature flag
ABSOLUTE_ZERO_DEGC = -273.15


# ----------------------------------------------------------------------------- parser
class HelpFormatter(argparse.HelpFormatter):
    """``--help`` lists each flag's allowed range (from its ``type=``) and its default.

    A type made by :func:`int_in`, :func:`float_in`, ... carries an ``allowed`` text, which
    is appended as ``[allowed: ...]``; a flag with a default other than ``None``/``False``
    whose help does not already mention one gets ``(default: ...)``.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        allowed = getattr(action.type, "allowed", None)
        if allowed:
            text += f" [allowed: {allowed.replace('%', '%%')}]"
        default = action.default
        if (
            action.option_strings
            and not action.required
            and default is not None
            and default is not False
            and default is not argparse.SUPPRESS
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter`; its subcommands inherit it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


# ----------------------------------------------------------------------------- value types
# Each factory returns a ``type=`` function: it converts the text or raises
# ``argparse.ArgumentTypeError`` naming the allowed range (argparse prefixes the flag name),
# and carries that range as ``.allowed`` for --help.


def _num(v: float) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if v > 2**20 and (v + 1) & v == 0:  # 2**k - 1
        return f"2**{v.bit_length()} - 1"
    return str(v)


def _range_text(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is None and hi is None:
        return "any"
    if hi is None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return f"{'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"


def _typed(func: Callable, name: str, allowed: str) -> Callable:
    func.__name__ = name  # argparse names the type in its own messages
    func.allowed = allowed  # type: ignore[attr-defined]
    return func


def int_in(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """``type=`` for an integer in ``[lo, hi]`` (``None``: unbounded on that side)."""
    rng = _range_text(lo, hi)
    what = f"an integer {rng}" if lo is None or hi is None else f"an integer in {rng}"

    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {what}, got {v}")
        return v

    return _typed(parse, "integer", what.removeprefix("an "))


def float_in(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    unit: str = "",
) -> Callable[[str], float]:
    """``type=`` for a finite number in ``[lo, hi]`` (``lo_open``/``hi_open``: exclusive)."""
    rng = _range_text(lo, hi, lo_open, hi_open)
    u = f" {unit}" if unit else ""
    if lo is None and hi is None:
        what = f"a finite number{u}"
    elif lo is None or hi is None:
        what = f"a finite number {rng}{u}"
    else:
        what = f"a finite number in {rng}{u}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        bad = not math.isfinite(v)
        if lo is not None:
            bad |= v <= lo if lo_open else v < lo
        if hi is not None:
            bad |= v >= hi if hi_open else v > hi
        if bad:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text.strip()}")
        return v

    return _typed(parse, "number", what.removeprefix("a "))


#: ``type=`` for any finite number (refuses ``nan`` and ``inf``)
finite_float = float_in()
#: ``type=`` for a temperature in degC: finite and above absolute zero
temperature_degC = float_in(ABSOLUTE_ZERO_DEGC, None, lo_open=True, unit="degC")


def finite_float_list(text: str) -> list[float]:
    """``type=`` for ``"a,b,c"``: at least one finite number (negative values allowed)."""
    values = float_list(text)
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated finite numbers (no nan/inf), got {text!r}"
        )
    return values


_typed(finite_float_list, "list of numbers", "comma-separated finite numbers")


def int_list_in(lo: int | None = None, hi: int | None = None) -> Callable[[str], list[int]]:
    """``type=`` for ``"1024,1035"``: at least one integer, each in ``[lo, hi]``."""
    one = int_in(lo, hi)
    rng = _range_text(lo, hi)

    def parse(text: str) -> list[int]:
        parts = [v for v in text.split(",") if v.strip() != ""]
        if not parts:
            raise argparse.ArgumentTypeError(
                f"expected one or more comma-separated integers {rng}, got {text!r}"
            )
        return [one(v) for v in parts]

    return _typed(parse, "list of integers", f"comma-separated integers {rng}")


def existing_file(text: str) -> str:
    """``type=`` for an input file that exists and can be read."""
    p = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    if not p.is_file():
        why = "is a folder, not a file" if p.is_dir() else "no such file"
        raise argparse.ArgumentTypeError(f"{text}: {why}")
    if not os.access(p, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: file not readable")
    return text


_typed(existing_file, "file", "an existing file")


def existing_dir(text: str) -> str:
    """``type=`` for an input folder that exists."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got ''")
    if not Path(text).is_dir():
        why = "is a file, not a folder" if Path(text).exists() else "no such folder"
        raise argparse.ArgumentTypeError(f"{text}: {why}")
    return text


_typed(existing_dir, "folder", "an existing folder")


def output_file(make_parents: bool = False) -> Callable[[str], str]:
    """``type=`` for an output file: not a folder, and a writable folder to hold it.

    ``make_parents=False``: that folder must exist; ``True``: the command creates missing
    folders, so the nearest existing one must be a writable folder.
    """

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError("expected a file name, got ''")
        p = Path(text)
        if p.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name")
        if p.exists() and not os.access(p, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text}: file not writable")
        folder = p.parent
        if make_parents:
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
        if not folder.exists():
            raise argparse.ArgumentTypeError(f"{text}: its folder {folder} does not exist")
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{text}: folder {folder} is not writable")
        return text

    where = "in a writable folder" if make_parents else "in an existing writable folder"
    return _typed(parse, "output file", f"a file name {where}")


def float_list(text: str) -> list[float]:
    """Parse ``"a,b,c"`` (negative values allowed) into floats."""
    try:
        return [float(v) for v in text.split(",") if v.strip() != ""]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


_NEGATIVE_WORDS = ("-inf", "-infinity", "-nan")


def fix_negative_values(argv: list[str]) -> list[str]:
    """Join ``--opt -1,2`` into ``--opt=-1,2`` so argparse does not take it for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" not in a and i + 1 < len(argv):
            nxt = argv[i + 1]
            number = len(nxt) > 1 and (nxt[1].isdigit() or nxt[1] == ".")
            if nxt.startswith("-") and (number or nxt.lower() in _NEGATIVE_WORDS):
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
