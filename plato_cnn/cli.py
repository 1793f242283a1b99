"""``plato-cnn``: a thin command line over :mod:`plato_cnn`.

Subcommands are added as the estimators land (``bft``, ``pretrain``, ``finetune``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from plato_sim.cli import _fix_negative_values

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="plato-cnn", description=__doc__.splitlines()[0])
    ap.add_subparsers(dest="command", required=True)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``plato-cnn``."""
    args = _parser().parse_args(_fix_negative_values(list(sys.argv[1:] if argv is None else argv)))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
