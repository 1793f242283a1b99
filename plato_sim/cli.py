"""``plato-sim``: a thin command line over :mod:`plato_sim`.

Subcommands: ``psf`` (one stamp to FITS).  Each subcommand parses its arguments and calls
the library; no physics lives here.  Negative numbers and comma lists parse as values
(``--defocus-um -50``, ``--offset-px -0.3,0.2``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "float_list"]


def float_list(text: str) -> list[float]:
    """Parse ``"a,b,c"`` (negative values allowed) into floats."""
    try:
        return [float(v) for v in text.split(",") if v.strip() != ""]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="plato-sim", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("psf", help="render one PSF stamp to a FITS file")
    p.add_argument("--engine", choices=("fast", "galsim", "poppy"), default="fast")
    p.add_argument("--field-deg", type=float, required=True, help="field angle theta (deg)")
    p.add_argument("--phi-deg", type=float, default=0.0, help="field azimuth phi (deg)")
    p.add_argument("--defocus-um", type=float, required=True, help="thermal focal shift dz_th (um)")
    p.add_argument("--offset-px", type=float_list, default=[0.0, 0.0], help="dx,dy (pixels)")
    p.add_argument(
        "--wavelength-nm", type=float, default=None, help="monochromatic (default: OGSE)"
    )
    p.add_argument("--n-wavelengths", type=int, default=10, help="polychromatic samples")
    p.add_argument("--size", type=int, default=32, help="stamp side (pixels)")
    p.add_argument("--camera", default=None, help="camera YAML (default: PLATO normal camera)")
    p.add_argument("--out", required=True, help="output FITS file")
    p.set_defaults(func=_cmd_psf)
    return ap


def _cmd_psf(args: argparse.Namespace) -> int:
    from .psf import write_psf_fits

    if len(args.offset_px) != 2:
        raise SystemExit("plato-sim psf: --offset-px needs two values dx,dy")
    path = write_psf_fits(
        args.out,
        engine=args.engine,
        theta_deg=args.field_deg,
        phi_deg=args.phi_deg,
        dz_th_um=args.defocus_um,
        offset_px=tuple(args.offset_px),
        wavelength_nm=args.wavelength_nm,
        n_wavelengths=args.n_wavelengths,
        size=args.size,
        camera_yaml=args.camera,
    )
    print(f"wrote {path}")
    return 0


def _fix_negative_values(argv: list[str]) -> list[str]:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``plato-sim``."""
    args = _parser().parse_args(_fix_negative_values(list(sys.argv[1:] if argv is None else argv)))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
