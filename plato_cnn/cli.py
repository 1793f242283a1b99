"""``plato-cnn``: a thin command line over :mod:`plato_cnn`.

Subcommands: ``bft`` (``--method eef`` or ``cnn``), ``pretrain``, ``finetune``,
``focus-check`` (in orbit: the TRP1 change to best focus from star imagettes).

``bft CAMPAIGN_DIR --method eef``: best-focus temperature of a ground-test campaign
(format v1).  Methods are registered in :data:`BFT_METHODS` (``name -> (add_arguments,
run)``) so that another estimator (``--method cnn``) plugs in without touching the rest:
``run(args, frames)`` returns the report dict that is printed and written to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from plato_sim.clitools import add_verbosity, fix_negative_values, run_command

__all__ = ["main", "BFT_METHODS", "int_list"]


def int_list(text: str) -> list[int]:
    """Parse ``"1024,1035"`` into integers."""
    try:
        return [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from exc


def s_prior_arg(text: str) -> tuple[float, float]:
    """Parse ``"MEAN,SIGMA"`` (um/degC) into a thermal-sensitivity prior."""
    try:
        mean, sigma = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected MEAN,SIGMA in um/degC: {text!r}") from exc
    if not (math.isfinite(mean) and mean != 0 and math.isfinite(sigma) and sigma > 0):
        raise argparse.ArgumentTypeError(f"need a finite non-zero MEAN and SIGMA > 0: {text!r}")
    return mean, sigma


# ----------------------------------------------------------------------------- bft: eef
def _eef_arguments(p: argparse.ArgumentParser) -> None:
    from plato_cnn.classical import FITS

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
    from plato_cnn.classical import estimate_bft
    from plato_cnn.metrics import frame_eef
    from plato_cnn.report import eef_result, plot_eef_bft, save_figure

    e = frame_eef(frames.stamps, args.variant)
    r = estimate_bft(frames, args.fit, args.variant, e, seed=args.seed, n_boot=args.n_boot)
    if args.plot:
        save_figure(plot_eef_bft(frames, e, r), args.plot)
    return eef_result(r)


# ----------------------------------------------------------------------------- bft: cnn
def _cnn_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--method cnn")
    g.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    g.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    g.add_argument(
        "--s-prior",
        type=s_prior_arg,
        default=None,
        metavar="MEAN,SIGMA",
        help="thermal sensitivity prior (um/degC) instead of the model's 10,3; with one plateau, "
        "give s_um_per_degC,s_sigma_um_per_degC of an earlier sweep of the same camera",
    )
    g.add_argument(
        "--no-plateau-head",
        action="store_true",
        help="do not apply the model's camera-level correction of each plateau (plateau head)",
    )


def _cnn_run(args: argparse.Namespace, frames) -> dict:
    from plato_cnn.predict import cnn_bft
    from plato_cnn.report import cnn_result, plot_cnn_bft, save_figure

    fit, info = cnn_bft(
        frames,
        args.model,
        n_boot=args.n_boot,
        seed=args.seed,
        device=args.device,
        s_prior=args.s_prior,
        plateau_head=not args.no_plateau_head,
    )
    if args.plot:
        use = frames.usable
        save_figure(plot_cnn_bft(frames.select(use), fit, info["frame_mu_um"]), args.plot)
    return cnn_result(fit, info, frames.obsid[frames.usable].tolist(), args.s_prior)


#: ``--method`` name -> (add its arguments, run it on the frames).
BFT_METHODS: dict[str, tuple[Callable, Callable]] = {
    "eef": (_eef_arguments, _eef_run),
    "cnn": (_cnn_arguments, _cnn_run),
}


# ----------------------------------------------------------------------------- pretrain
def _cmd_pretrain(args: argparse.Namespace) -> int:
    from plato_cnn.nn.model import FocusNetConfig
    from plato_cnn.pipelines.pretrain import TrainConfig, pretrain_from_dataset

    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        num_workers=args.workers,
        max_steps_per_epoch=args.max_steps_per_epoch,
        max_val_samples=args.max_val_samples,
        deterministic=args.deterministic,
    )
    mcfg = FocusNetConfig(crop=args.crop)
    summary = pretrain_from_dataset(args.data, args.out, cfg, mcfg, args.device)
    print(json.dumps(summary, indent=1))
    return 0


# ----------------------------------------------------------------------------- finetune
def _cmd_finetune(args: argparse.Namespace) -> int:
    from plato_cnn.nn.data import ShardFocusDataset
    from plato_cnn.pipelines.finetune import FinetuneConfig, finetune
    from plato_cnn.reader import read_campaign

    frames = []
    for d in args.campaign:
        fr = read_campaign(d)
        frames.append(fr.select(fr.usable))
    synthetic = ShardFocusDataset(args.synthetic) if args.synthetic else None
    cfg = FinetuneConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    summary = finetune(frames, args.out, args.model, cfg, synthetic)
    for cam, b, a in zip(summary["cameras"], summary["before"], summary["after"], strict=True):
        print(
            f"{cam}: s = {a['s_um_per_degC']:.2f} um/degC; network field temperatures minus "
            f"EEF-anchored ones: {b['net_minus_eef_degC_mean']:+.2f} -> "
            f"{a['net_minus_eef_degC_mean']:+.2f} degC"
        )
    print(f"wrote {args.out}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from plato_cnn.pipelines.calibrate import calibrate_systematic, emulate_calibration_set

    campaigns = emulate_calibration_set(
        args.workdir, args.cameras, seed=args.seed, workers=args.workers
    )
    result = calibrate_systematic(
        args.model, campaigns, write=not args.dry_run, workers=args.workers
    )
    for n, r in sorted(result["by_plateaux"].items(), key=lambda kv: (-int(kv[0][0]), kv[0])):
        what = f"{n} plateaux" if n.isdigit() else "1 plateau, s of an earlier sweep"
        print(
            f"{what}: RMS error {r['rms_error_degC']:.2f} degC, bias "
            f"{r['bias_degC']:+.2f}, bootstrap {r['rms_bootstrap_sigma_degC']:.2f}, "
            f"x {r['bootstrap_scale']:.2f}, systematic sigma {r['systematic_sigma_degC']:.2f}, "
            f"coverage {100 * r['coverage']:.0f} %"
        )
    nh = result.get("without_plateau_head")
    if nh:
        print(
            "without the plateau head: RMS error "
            + ", ".join(f"{k} {v['rms_error_degC']:.2f}" for k, v in nh.items())
            + " degC"
        )
    what = "measured only (--dry-run):" if args.dry_run else "wrote"
    print(f"{what} {args.model}/model.json")
    return 0


# ----------------------------------------------------------------------------- plateau-head
def _cmd_plateau_head(args: argparse.Namespace) -> int:
    from plato_cnn.nn.plateau_head import PlateauHeadConfig
    from plato_cnn.pipelines.plateau_head import build_plateau_head

    r = build_plateau_head(
        args.model, args.workdir, args.cameras, args.validation_cameras, args.seed,
        args.workers, PlateauHeadConfig(epochs=args.epochs), write=not args.dry_run,
    )  # fmt: skip
    print(
        f"{r['train_cameras']} training cameras ({r['train_snapshots']} plateaux): target RMS "
        f"{r['train_rms_target_um']:.2f} um, residual {r['train_rms_residual_um']:.2f} um"
    )
    if "validation_rms_target_um" in r:
        print(
            f"{r['validation_cameras']} held-out cameras: target RMS "
            f"{r['validation_rms_target_um']:.2f} um, residual "
            f"{r['validation_rms_residual_um']:.2f} um"
        )
    what = "measured only (--dry-run):" if args.dry_run else "wrote the plateau head into"
    print(f"{what} {args.model}; rerun plato-cnn calibrate on it")
    return 0


# ----------------------------------------------------------------------------- focus-check
def _cmd_focus_check(args: argparse.Namespace) -> int:
    from plato_cnn.focuscheck import focus_check_file

    report = focus_check_file(args.imagettes, args.temperature_degC, args.model, args.device)
    for w in report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"{report['camera']}: focal shift {report['shift_um']:+.1f} +- "
        f"{report['shift_sigma_um']:.1f} um from best focus; change TRP1 by "
        f"{report['delta_t_degC']:+.2f} +- {report['delta_t_sigma_degC']:.2f} degC "
        f"(to {report['target_degC']:.2f} degC; {report['n_used']} of {report['n_stars']} "
        f"stars used{'; side of focus ambiguous' if report['sign_ambiguous'] else ''})"
    )
    if args.json:
        from plato_cnn.report import write_json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, report)
    return 0


def _cmd_bft(args: argparse.Namespace) -> int:
    from plato_cnn.reader import read_campaign
    from plato_cnn.report import campaign_report, check_output_path, write_json

    for out_path in (args.json, args.plot):
        if out_path:
            check_output_path(out_path, inputs=[args.campaign_dir])
    frames = read_campaign(args.campaign_dir, obsids=args.obsids, strict=args.strict)
    result = BFT_METHODS[args.method][1](args, frames)
    out = campaign_report(frames, args.campaign_dir, args.method, result)
    for w in out["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"{frames.camera}: BFT = {out['bft_degC']:.2f} +- {out['sigma_degC']:.2f} degC "
        f"({args.method}, {out.get('fit', '')}; {out['frames_used']} frames used, "
        f"{out['frames_dropped']} dropped)"
    )
    if args.json:
        write_json(args.json, out)
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="plato-cnn", description=__doc__.splitlines()[0])
    add_verbosity(ap)
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

    p = sub.add_parser("pretrain", help="pretrain FocusNet on a synthetic dataset")
    p.add_argument("--data", required=True, help="dataset folder (plato-sim generate)")
    p.add_argument("--out", required=True, help="model directory (rerun to resume)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--max-steps-per-epoch", type=int, default=0, help="0: whole split")
    p.add_argument("--max-val-samples", type=int, default=8192, help="0: all held-out samples")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--crop", type=int, default=20, help="network input side (8: 10x10 imagettes)")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("finetune", help="adapt a model to ground-test campaigns")
    p.add_argument("--campaign", nargs="+", required=True, help="campaign folders")
    p.add_argument("--model", default=None, help="base model directory (default: shipped)")
    p.add_argument("--out", required=True, help="fine-tuned model directory")
    p.add_argument("--synthetic", default=None, help="dataset folder replayed against collapse")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser(
        "calibrate", help="calibrate a model's systematic sigma on emulated calibration cameras"
    )
    p.add_argument("--model", required=True, help="model directory (its model.json is updated)")
    p.add_argument("--workdir", default="out/calibration", help="calibration campaigns (cache)")
    p.add_argument("--cameras", type=int, default=40, help="calibration cameras")
    p.add_argument("--seed", type=int, default=91_000, help="calibration camera set seed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dry-run", action="store_true", help="measure, do not write model.json")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser(
        "plateau-head",
        help="train a model's camera-level correction of each plateau on emulated cameras",
    )
    p.add_argument("--model", required=True, help="model directory (the head is stored there)")
    p.add_argument("--workdir", default="out/plateau_head", help="training campaigns (cache)")
    p.add_argument("--cameras", type=int, default=1140, help="emulated training cameras")
    p.add_argument("--validation-cameras", type=int, default=40, help="of those, held out")
    p.add_argument("--seed", type=int, default=95_000, help="training camera set seed")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dry-run", action="store_true", help="train and report, do not write")
    p.set_defaults(func=_cmd_plateau_head)

    p = sub.add_parser("focus-check", help="in orbit: TRP1 change to best focus from imagettes")
    p.add_argument("imagettes", help="imagette FITS file (plato_sim.io.imagette_format)")
    p.add_argument("--temperature-degC", type=float, required=True, help="TRP1 temperature")
    p.add_argument("--model", default=None, help="model directory (default: the in-orbit model)")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.set_defaults(func=_cmd_focus_check)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``plato-cnn``."""
    args = _parser().parse_args(fix_negative_values(list(sys.argv[1:] if argv is None else argv)))
    return run_command("plato-cnn", args)


if __name__ == "__main__":
    raise SystemExit(main())
