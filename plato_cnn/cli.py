"""``plato-cnn``: a thin command line over :mod:`plato_cnn`.

Subcommands are added as the estimators land (``bft``, ``pretrain``, ``finetune``).

``bft CAMPAIGN_DIR --method eef``: best-focus temperature of a ground-test campaign
(format v1).  Methods are registered in :data:`BFT_METHODS` (``name -> (add_arguments,
run)``) so that another estimator (``--method cnn``) plugs in without touching the rest:
``run(args, frames)`` returns the report dict that is printed and written to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from plato_sim.cli import _fix_negative_values

__all__ = ["main", "BFT_METHODS", "int_list"]


def int_list(text: str) -> list[int]:
    """Parse ``"1024,1035"`` into integers."""
    try:
        return [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from exc


# ----------------------------------------------------------------------------- bft: eef
def _eef_arguments(p: argparse.ArgumentParser) -> None:
    from .classical import FITS

    g = p.add_argument_group("--method eef")
    g.add_argument(
        "--fit",
        choices=FITS,
        default="cubic",
        help="cubic (test houses, default), quartic, quadratic, or gauss (improved)",
    )
    g.add_argument("--variant", choices=("2x2", "3x3", "8x8"), default="2x2", help="EEF variant")
    g.add_argument("--n-boot", type=int, default=200, help="bootstrap draws (gauss)")


def _eef_run(args: argparse.Namespace, frames) -> dict:
    from .classical import estimate_bft, plot_bft
    from .metrics import frame_eef

    e = frame_eef(frames.stamps, args.variant)
    r = estimate_bft(frames, args.fit, args.variant, e, seed=args.seed, n_boot=args.n_boot)
    if args.plot:
        plot_bft(frames, e, r, args.plot)
    return {
        "fit": r.fit,
        "eef_variant": r.variant,
        "bft_degC": r.bft_degC,
        "sigma_degC": r.sigma_degC,
        "obsids": r.obsids,
        "frames_used": r.frames_used,
        "plateaux_degC": r.temperatures_degC,
        "mean_eef": r.mean_eef,
        "std_eef": r.std_eef,
        "n_fields": r.n_fields,
        "at_edge": r.at_edge,
        "warnings": list(r.warnings),
        "details": r.extra,
    }


#: ``--method`` name -> (add its arguments, run it on the frames).
BFT_METHODS: dict[str, tuple[Callable, Callable]] = {"eef": (_eef_arguments, _eef_run)}


def _cmd_bft(args: argparse.Namespace) -> int:
    from plato_sim.io.campaign_format import FormatError

    from .campaign import CampaignError, read_campaign
    from .classical import InsufficientPlateaux

    try:
        frames = read_campaign(args.campaign_dir, obsids=args.obsids, strict=args.strict)
        report = BFT_METHODS[args.method][1](args, frames)
    except (CampaignError, FormatError, InsufficientPlateaux) as exc:
        print(f"plato-cnn bft: {exc}", file=sys.stderr)
        return 2
    drops = dict(frames.drops.frames)
    for k, v in frames.excluded_counts().items():
        drops[k] = drops.get(k, 0) + v
    out = {
        "camera": frames.camera,
        "site": frames.site,
        "campaign": str(Path(args.campaign_dir).resolve()),
        "method": args.method,
        **report,
        "frames_read": len(frames),
        "frames_dropped": int(sum(drops.values())),
        "drops": drops,
        "warnings": frames.drops.warnings + report.get("warnings", []),
        "unstable_obsids": [o.obsid for o in frames.observations if o.unstable],
    }
    for w in out["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"{frames.camera}: BFT = {out['bft_degC']:.2f} +- {out['sigma_degC']:.2f} degC "
        f"({args.method}, {out.get('fit', '')}; {out['frames_used']} frames used, "
        f"{out['frames_dropped']} dropped)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="plato-cnn", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bft", help="best-focus temperature of a ground-test campaign")
    p.add_argument("campaign_dir", help="campaign folder (format v1)")
    p.add_argument("--method", choices=tuple(BFT_METHODS), default="eef")
    p.add_argument("--obsids", type=int_list, default=None, help="e.g. 1024,1035 (default all)")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--plot", default=None, help="PNG of EEF vs temperature, fit and BFT")
    p.add_argument("--strict", action="store_true", help="fail on the first bad file")
    p.add_argument("--seed", type=int, default=0, help="seed of the uncertainty draws")
    for add_args, _run in BFT_METHODS.values():
        add_args(p)
    p.set_defaults(func=_cmd_bft)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``plato-cnn``."""
    args = _parser().parse_args(_fix_negative_values(list(sys.argv[1:] if argv is None else argv)))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
