"""``plato-sim``: a thin command line over :mod:`plato_sim`.

Subcommands: ``psf`` (one stamp to FITS), ``generate`` and ``info`` (training datasets),
``campaign`` (an emulated ground-test campaign in format v1), ``imagettes`` (emulated
in-orbit star imagettes at one TRP1 temperature).
Each subcommand parses its arguments and calls the library; no physics lives here.
Negative numbers and comma lists parse as values
(``--defocus-um -50``, ``--offset-px -0.3,0.2``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from plato_sim._version import __version__
from plato_sim.clitools import (
    SEED_MAX,
    ArgumentParser,
    add_verbosity,
    existing_file,
    finite_float,
    finite_float_list,
    fix_negative_values,
    float_in,
    int_in,
    int_list_in,
    output_file,
    run_command,
    temperature_degC,
)
from plato_sim.errors import ParameterError
from plato_sim.optics.camera import FIELD_RADIUS_DEG

__all__ = ["main"]

#: ``--seed`` of every subcommand
SEED = int_in(0, SEED_MAX)


def _parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="plato-sim", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_verbosity(ap)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("psf", help="render one PSF stamp to a FITS file")
    p.add_argument(
        "--engine", choices=("fast", "galsim", "poppy"), default="fast", help="PSF engine"
    )
    p.add_argument(
        "--field-deg",
        type=float_in(0.0, FIELD_RADIUS_DEG, unit="deg"),
        required=True,
        help="field angle theta from the optical axis (deg)",
    )
    p.add_argument("--phi-deg", type=finite_float, default=0.0, help="field azimuth phi (deg)")
    p.add_argument(
        "--defocus-um",
        type=finite_float,
        required=True,
        help="thermal focal shift dz_th (um, > 0 behind focus)",
    )
    p.add_argument(
        "--offset-px",
        type=finite_float_list,
        default="0,0",
        metavar="DX,DY",
        help="sub-pixel offset of the star dx,dy (pixels, each in [-0.5, 0.5])",
    )
    p.add_argument(
        "--wavelength-nm",
        type=float_in(0.0, None, lo_open=True, unit="nm"),
        default=None,
        help="one wavelength (nm, within the camera's band) for a monochromatic stamp "
        "(default: the OGSE spectrum)",
    )
    p.add_argument(
        "--n-wavelengths",
        type=int_in(1, 100),
        default=10,
        help="wavelength samples of the OGSE spectrum (without --wavelength-nm)",
    )
    p.add_argument(
        "--size-px",
        "--size",
        dest="size_px",
        type=int_in(4, 256),
        default=32,
        help="stamp side (pixels)",
    )
    p.add_argument(
        "--camera-yaml",
        type=existing_file,
        default=None,
        help="camera description YAML file (default: the PLATO normal camera)",
    )
    p.add_argument(
        "--out", type=output_file(make_parents=True), required=True, help="output FITS file"
    )
    p.set_defaults(func=_cmd_psf)
    _add_dataset_commands(sub)
    _add_campaign_command(sub)
    _add_imagettes_command(sub)
    return ap


def _cmd_psf(args: argparse.Namespace) -> int:
    from plato_sim.psf.render import write_psf_fits

    if len(args.offset_px) != 2 or any(abs(v) > 0.5 for v in args.offset_px):
        raise ParameterError(
            f"--offset-px needs two values dx,dy in [-0.5, 0.5] pixel, got {args.offset_px}"
        )
    path = write_psf_fits(
        args.out,
        engine=args.engine,
        theta_deg=args.field_deg,
        phi_deg=args.phi_deg,
        dz_th_um=args.defocus_um,
        offset_px=tuple(args.offset_px),
        wavelength_nm=args.wavelength_nm,
        n_wavelengths=args.n_wavelengths,
        size=args.size_px,
        camera_yaml=args.camera_yaml,
    )
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- datasets
def _add_dataset_commands(sub) -> None:
    """``generate`` and ``info``: synthetic training datasets (plato_sim.generate)."""
    p = sub.add_parser("generate", help="generate (or resume) a synthetic training dataset")
    p.add_argument("--out", required=True, help="dataset folder (rerun the same command to resume)")
    p.add_argument(
        "--config", type=existing_file, default=None, help="dataset YAML (default: built-in config)"
    )
    p.add_argument(
        "--n", type=int_in(1), default=None, help="number of samples (default: one shard)"
    )
    p.add_argument("--seed", type=SEED, default=0, help="dataset seed")
    p.add_argument(
        "--camera-pool",
        type=int_in(1),
        default=None,
        help="cameras in the pool (default: the config's cameras.n_pool; 'auto' follows --n)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--workers", type=int_in(1), default=None, help="local processes (default: CPU cores)"
    )
    g.add_argument("--scheduler", default=None, help="address of a Dask scheduler")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("info", help="counts, label distributions and a gallery of a dataset")
    p.add_argument("dir", help="dataset folder")
    p.add_argument(
        "--gallery",
        default=None,
        help="write a gallery PNG of samples here (never inside the dataset)",
    )
    p.add_argument("--verify", action="store_true", help="check every shard's checksum")
    p.add_argument("--json", default=None, help="also write the summary as JSON to this file")
    p.add_argument("--fits", default=None, help="export the samples of --indices to this FITS")
    p.add_argument(
        "--indices",
        type=int_list_in(0),
        default="0",
        help="comma-separated sample indices for --fits",
    )
    p.set_defaults(func=_cmd_info)


def _cmd_generate(args: argparse.Namespace) -> int:
    from plato_sim.generate import generate

    m = generate(
        args.out,
        config=args.config,
        n=args.n,
        seed=args.seed,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.no_progress,
        camera_pool=args.camera_pool,
    )
    t = m["timing"]
    print(
        f"{args.out}: {m['n_samples']} samples in {len(m['shards'])} shards "
        f"({t['shards_made_this_run']} made now, {t['wall_s_this_run']:.1f} s)"
    )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from plato_sim.generate import describe, write_gallery
    from plato_sim.io.atomic import atomic_write_text

    ds_dir = Path(args.dir).resolve()
    for flag, out in (("--gallery", args.gallery), ("--json", args.json), ("--fits", args.fits)):
        if out and ds_dir in (Path(out).resolve(), *Path(out).resolve().parents):
            raise ParameterError(f"{flag} {out} lies inside the dataset {args.dir}")
    info = describe(args.dir, verify=args.verify)
    for k, v in info.items():
        if k != "labels":
            print(f"{k}: {v}")
    for name, d in info.get("labels", {}).items():
        print(
            f"  {name:22s} [{d['unit']:6s}] mean {d['mean']:11.4g} std {d['std']:10.4g} "
            f"min {d['min']:11.4g} median {d['median']:11.4g} max {d['max']:11.4g}"
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(info, indent=1) + "\n")
    if info.get("status") == "complete" and args.gallery:
        print(f"gallery: {write_gallery(args.dir, args.gallery)}")
    if args.fits:
        from plato_sim.io.store import ShardedDataset, export_fits

        ds = ShardedDataset(args.dir)
        idx = args.indices
        bad = [i for i in idx if not 0 <= i < len(ds)]
        if bad:
            raise ParameterError(
                f"--indices: sample index {bad[0]} out of range for {len(ds)} samples"
            )
        print(f"fits: {export_fits(ds, idx, args.fits)}")
    if args.verify and info.get("invalid_shards"):
        print(f"invalid shards: {info['invalid_shards']} (rerun generate to regenerate them)")
        return 1
    return 0


# ----------------------------------------------------------------------------- campaign
def _add_campaign_command(sub) -> None:
    """``campaign``: one camera's emulated ground-test campaign (plato_sim.scenes.ground_test)."""
    p = sub.add_parser("campaign", help="write an emulated ground-test campaign (format v1)")
    p.add_argument("--out", required=True, help="campaign folder (truth goes to OUT.truth.json)")
    p.add_argument(
        "--camera",
        required=True,
        help="camera NAME written into the file names and headers (non-empty, no '_'); "
        "not a camera YAML (that is plato-sim psf --camera-yaml)",
    )
    p.add_argument(
        "--bft-degC", type=temperature_degC, required=True, help="true best-focus TRP1 (degC)"
    )
    p.add_argument(
        "--plateaux-degC",
        "--plateaux",
        dest="plateaux_degC",
        type=finite_float_list,
        default="-90,-85,-80,-75,-70",
        metavar="T1,T2,...",
        help="TRP1 plateaux in acquisition order (degC)",
    )
    p.add_argument(
        "--fields", type=int_in(1), default=40, help="field positions (40 = the test table)"
    )
    p.add_argument("--dithers", type=int_in(1), default=25, help="dithers per field position")
    p.add_argument("--frames-per-dither", type=int_in(1), default=2, help="frames per dither")
    p.add_argument(
        "--window-px",
        "--window",
        dest="window_px",
        type=int_in(32, 1024),
        default=64,
        help="readout window side (pixels)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the camera and of the noise")
    p.add_argument(
        "--perturbation",
        type=float_in(0.0),
        default=1.0,
        help="camera perturbation strength (0 = the design)",
    )
    p.add_argument("--site", default="INTA", help="test house in names and headers")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=_cmd_campaign)


def _cmd_campaign(args: argparse.Namespace) -> int:
    from plato_sim.scenes.ground_test import emulate_campaign, truth_path

    truth = emulate_campaign(
        args.out,
        camera_name=args.camera,
        bft_degC=args.bft_degC,
        plateaux_degC=args.plateaux_degC,
        n_fields=args.fields,
        n_dithers=args.dithers,
        frames_per_dither=args.frames_per_dither,
        window_px=args.window_px,
        seed=args.seed,
        perturbation_strength=args.perturbation,
        site=args.site,
        overwrite=args.overwrite,
    )
    print(
        f"{args.out}: {truth['n_source_frames']} source frames on {len(truth['obsids'])} "
        f"plateaux (OBSIDs {truth['obsids']}), true T_BF {truth['bft_degC']:.2f} degC, "
        f"{truth['seconds_total']:.1f} s; truth: {truth_path(args.out)}"
    )
    return 0


# ----------------------------------------------------------------------------- imagettes
def _add_imagettes_command(sub) -> None:
    """``imagettes``: emulated in-orbit star windows (plato_sim.scenes.inorbit)."""
    p = sub.add_parser("imagettes", help="write emulated in-orbit imagettes (one FITS file)")
    p.add_argument(
        "--out", type=output_file(make_parents=True), required=True, help="output FITS file"
    )
    p.add_argument(
        "--temperature-degC", type=temperature_degC, required=True, help="TRP1 temperature (degC)"
    )
    p.add_argument("--n-stars", type=int_in(1), default=100, help="stars across the field")
    p.add_argument(
        "--bft-degC", type=temperature_degC, default=-78.0, help="true best-focus TRP1 (degC)"
    )
    p.add_argument(
        "--v-mag",
        type=finite_float_list,
        default="8.5,13",
        metavar="LO,HI",
        help="V magnitude range of the stars lo,hi (mag)",
    )
    p.add_argument(
        "--teff-K",
        type=finite_float_list,
        default="3500,7500",
        metavar="LO,HI",
        help="effective temperature range of the stars lo,hi (K, lo >= 2000)",
    )
    p.add_argument(
        "--size-px",
        "--size",
        dest="size_px",
        type=int_in(6, 16),
        default=10,
        help="imagette side (pixels)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the camera and of the field")
    p.add_argument(
        "--perturbation",
        type=float_in(0.0),
        default=1.0,
        help="camera perturbation strength (0 = the design)",
    )
    p.add_argument(
        "--camera",
        default="emulated",
        help="camera ID written into the FITS header (a label, not a camera YAML)",
    )
    p.add_argument("--no-truth", action="store_true", help="leave out the TRUTH extension")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=_cmd_imagettes)


def _cmd_imagettes(args: argparse.Namespace) -> int:
    from plato_sim.io.imagette_format import write_imagettes
    from plato_sim.scenes.inorbit import emulate_imagettes, make_camera

    if len(args.v_mag) != 2 or len(args.teff_K) != 2:
        raise ParameterError("--v-mag and --teff-K need two values lo,hi")
    cam = make_camera(args.seed, args.bft_degC, args.perturbation)
    field = emulate_imagettes(
        cam,
        args.temperature_degC,
        args.n_stars,
        seed=args.seed,
        v_mag_range=tuple(args.v_mag),
        teff_range_K=tuple(args.teff_K),
        size_px=args.size_px,
        camera_name=args.camera,
    )
    if args.no_truth:
        field.truth = None
    path = write_imagettes(args.out, field, overwrite=args.overwrite)
    print(
        f"wrote {path}: {args.n_stars} imagettes at TRP1 {args.temperature_degC:.2f} degC, "
        f"true T_BF {cam.bft_degC:.2f} degC (change to best focus "
        f"{cam.bft_degC - args.temperature_degC:+.2f} degC)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``plato-sim``."""
    args = _parser().parse_args(fix_negative_values(list(sys.argv[1:] if argv is None else argv)))
    return run_command("plato-sim", args)


if __name__ == "__main__":
    raise SystemExit(main())
