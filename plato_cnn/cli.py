"""``plato-cnn``: a thin command line over :mod:`plato_cnn`.

Subcommands: ``bft`` (``--method eef``, ``cnn``, ``forward`` or ``field``), ``pretrain``,
``finetune``, ``field-head``, ``field-head-finetune``, ``focus-check`` (in orbit: the TRP1
change to best focus from star imagettes), ``ground-calibration`` (what a camera's ground test
measures for its in-orbit check).

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

from plato_sim._version import __version__
from plato_sim.clitools import (
    SEED_MAX,
    ArgumentParser,
    add_verbosity,
    existing_dir,
    existing_file,
    fix_negative_values,
    float_in,
    int_in,
    int_list_in,
    output_file,
    run_command,
    temperature_degC,
)

__all__ = ["main", "BFT_METHODS", "int_list", "torch_device"]

#: ``--seed`` of every subcommand
SEED = int_in(0, SEED_MAX)
#: ``--n-boot``: the classical bootstrap warns below 10 usable replicates, the thermal-model
#: fit needs 2 for a sigma (plato_cnn.classical.improved_bft, plato_cnn.fit.fit_bft)
N_BOOT = int_in(10)


def int_list(text: str) -> list[int]:
    """Parse ``"1024,1035"`` into integers."""
    try:
        return [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from exc


def torch_device(text: str) -> str:
    """``type=`` for ``--device``: ``cpu``, ``cuda`` or ``cuda:N``, refused if CUDA is absent."""
    name = text.strip().lower()
    if name == "cpu":
        return name
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    import torch

    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text}: CUDA is not available on this machine (torch.cuda.is_available() is "
            "False); use --device cpu"
        )
    n = torch.cuda.device_count()
    if index and int(index) >= n:
        raise argparse.ArgumentTypeError(f"{text}: this machine has CUDA devices 0..{n - 1}")
    return name


torch_device.allowed = "cpu, cuda or cuda:N (CUDA only where torch sees a GPU)"  # type: ignore[attr-defined]


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
    g.add_argument(
        "--variant", choices=("2x2", "3x3", "8x8"), default="2x2", help="EEF box (pixels)"
    )
    g.add_argument(
        "--n-boot",
        type=N_BOOT,
        default=200,
        help="bootstrap replicates of the uncertainty (--fit gauss and --method cnn)",
    )


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
    g = p.add_argument_group("--method cnn and forward")
    g.add_argument("--device", type=torch_device, default="cpu", help="torch device")
    g.add_argument(
        "--no-cross-check",
        action="store_true",
        help="do not compare with the improved classical estimate (which flags a camera "
        "outside what the model knows and widens sigma)",
    )
    g.add_argument(
        "--cross-check-forward",
        action="store_true",
        help="--method cnn: also compare with the forward fit of the same frames (minutes; "
        "flags and widens sigma the same way; key cross_check_forward)",
    )
    g.add_argument(
        "--s-prior-um-per-degC",
        "--s-prior",
        dest="s_prior",
        type=s_prior_arg,
        default=None,
        metavar="MEAN,SIGMA",
        help="thermal sensitivity prior (um/degC) instead of the model's 10,3; with one plateau, "
        "give s_um_per_degC,s_sigma_um_per_degC of an earlier sweep of the same camera",
    )
    g = p.add_argument_group("--method cnn")
    g.add_argument(
        "--model",
        type=existing_dir,
        default=None,
        help="model directory (default: the shipped model)",
    )
    g.add_argument(
        "--field-head-fallback",
        action="store_true",
        help="where the thermal-residual check flags the camera outside what the network "
        "knows, report the field head's estimate (--method field) instead; the CNN's is kept "
        "under cnn_estimate",
    )
    g.add_argument(
        "--no-plateau-head",
        action="store_true",
        help="do not apply the model's camera-level correction of each plateau (plateau head)",
    )
    g.add_argument(
        "--offset-correction",
        type=existing_file,
        default=None,
        metavar="JSON",
        help="re-check of a known camera: the per-field correction of the model's offsets "
        "measured on an earlier campaign of the same camera (plato-cnn offset-correction); "
        "replaces the plateau head",
    )


def _cnn_run(args: argparse.Namespace, frames) -> dict:
    from plato_cnn.predict import cnn_bft
    from plato_cnn.report import cnn_result, plot_cnn_bft, save_figure

    correction, s_prior = None, args.s_prior
    if args.offset_correction:
        from plato_cnn.offset_correction import load_offset_correction

        correction = load_offset_correction(args.offset_correction)
        s_prior = s_prior or correction.s_prior_um_per_degC
    fit, info = cnn_bft(
        frames,
        args.model,
        n_boot=args.n_boot,
        seed=args.seed,
        device=args.device,
        s_prior=s_prior,
        plateau_head=not args.no_plateau_head,
        offset_correction=correction,
    )
    if args.plot:
        use = frames.usable
        save_figure(plot_cnn_bft(frames.select(use), fit, info["frame_mu_fitted_um"]), args.plot)
    result = cnn_result(fit, info, frames.obsid[frames.usable].tolist(), s_prior)
    if args.field_head_fallback and result["thermal_residual"]["outside"]:
        result = _field_head_fallback(args, frames, result)
    result = _cross_checked(args, frames, result)
    if args.cross_check_forward:
        from plato_cnn.crosscheck import cross_check_forward

        result = cross_check_forward(frames, result, seed=args.seed)
    return result


def _field_head_fallback(args: argparse.Namespace, frames, result: dict) -> dict:
    """The field head's estimate in place of a CNN estimate its residual check flagged
    (docs/cnn.md section 7); the CNN's stays under ``cnn_estimate``."""
    from plato_cnn.field_bft import field_head_bft

    # flagged by the CNN's own residual check: the field head's out-of-family term applies
    fh = field_head_bft(frames, args.model, args.field_head, device=args.device, outside=True)
    cnn = {k: result[k] for k in ("fit", "bft_degC", "sigma_degC")}
    note = (
        f"the CNN estimate ({cnn['bft_degC']:.2f} +- {cnn['sigma_degC']:.2f} degC) is outside "
        "what the network knows: the field head's is reported (--field-head-fallback)"
    )
    return {
        **result,
        "fit": "field-head (fallback)",
        "bft_degC": fh["bft_degC"],
        "sigma_degC": fh["sigma_degC"],
        "cnn_estimate": cnn,
        "field_head": fh["field_head"],
        "family_check": fh["family_check"],
        "warnings": result["warnings"] + fh["warnings"] + [note],
    }


def _cross_checked(args: argparse.Namespace, frames, result: dict) -> dict:
    """The model-based result checked against the improved classical one (unless disabled)."""
    if args.no_cross_check:
        return result
    from plato_cnn.crosscheck import cross_check

    return cross_check(frames, result, seed=args.seed)


# ----------------------------------------------------------------------------- bft: forward
def _forward_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--method forward (--device and --s-prior-um-per-degC as for cnn)")
    g.add_argument(
        "--max-iter",
        type=int_in(1, 200),
        default=40,
        help="Levenberg-Marquardt iterations of the forward-model fit",
    )
    g.add_argument(
        "--linear-thermal",
        action="store_true",
        help="fix q = 0 in dz = b + s (T - T_ref) + q (T - T_ref)^2 (default: q free with "
        "a prior of 0.05 um/degC^2)",
    )
    g.add_argument(
        "--field-focus",
        action="store_true",
        help="also report each field position's best focus under the fitted optics "
        "(key field_focus: the physics labels that finetune --forward-json reuses)",
    )


def _forward_run(args: argparse.Namespace, frames) -> dict:
    from plato_cnn.forward import forward_bft
    from plato_cnn.report import plot_forward_bft, save_figure

    report = forward_bft(
        frames,
        device=args.device,
        seed=args.seed,
        max_iter=args.max_iter,
        quadratic=not args.linear_thermal,
        s_prior=args.s_prior,
        field_focus=args.field_focus,
    )
    if args.plot:
        save_figure(plot_forward_bft(report, frames), args.plot)
    return _cross_checked(args, frames, {k: v for k, v in report.items() if not k.startswith("_")})


# ----------------------------------------------------------------------------- bft: field
def _field_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--method field (--model and --device as for cnn)")
    g.add_argument(
        "--field-head",
        type=existing_dir,
        default=None,
        help="field head directory (default: the shipped one; plato-cnn field-head)",
    )


def _field_run(args: argparse.Namespace, frames) -> dict:
    from plato_cnn.field_bft import field_head_bft

    result = field_head_bft(frames, args.model, args.field_head, device=args.device, seed=args.seed)
    return _cross_checked(args, frames, result)


#: ``--method`` name -> (add its arguments, run it on the frames).
BFT_METHODS: dict[str, tuple[Callable, Callable]] = {
    "eef": (_eef_arguments, _eef_run),
    "cnn": (_cnn_arguments, _cnn_run),
    "forward": (_forward_arguments, _forward_run),
    "field": (_field_arguments, _field_run),
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
        **({} if args.patience is None else {"patience": args.patience}),
    )
    mcfg = FocusNetConfig(crop=args.crop_px)
    summary = pretrain_from_dataset(args.data, args.out, cfg, mcfg, args.device)
    print(json.dumps(summary, indent=1))
    return 0


# ----------------------------------------------------------------------------- finetune
def _read_report(path: str) -> dict:
    """A JSON report written by ``bft`` (one object), or a :class:`DataError`."""
    from plato_sim.errors import DataError

    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON report ({exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a report is one JSON object")
    return obj


def _cmd_finetune(args: argparse.Namespace) -> int:
    from plato_cnn.nn.data import ShardFocusDataset
    from plato_cnn.pipelines.finetune import FinetuneConfig, finetune
    from plato_cnn.reader import read_campaign
    from plato_sim.errors import ParameterError

    if args.variants and not args.resimulate:
        raise ParameterError("--variants needs --resimulate (variants of the fitted cameras)")
    frames = []
    for d in args.campaign:
        fr = read_campaign(d)
        frames.append(fr.select(fr.usable))
    synthetic = ShardFocusDataset(args.synthetic) if args.synthetic else None
    reports = [_read_report(p) for p in args.forward_json] if args.forward_json else None
    cfg = FinetuneConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, labels=args.labels,
                         resimulate=args.resimulate, patience=args.patience,
                         resim_variants=args.variants)  # fmt: skip
    summary = finetune(frames, args.out, args.model, cfg, synthetic, forward_reports=reports)
    for cam, b, a in zip(summary["cameras"], summary["before"], summary["after"], strict=True):
        if args.labels == "forward":
            print(
                f"{cam}: network offsets minus physics labels, RMS per frame "
                f"{b['net_minus_label_um_rms']:.2f} -> {a['net_minus_label_um_rms']:.2f} um, "
                f"of the (field, plateau) means {b['field_plateau_mean_rms_um']:.2f} -> "
                f"{a['field_plateau_mean_rms_um']:.2f} um"
            )
            continue
        print(
            f"{cam}: s = {a['s_um_per_degC']:.2f} um/degC; network field temperatures minus "
            f"EEF-anchored ones: {b['net_minus_eef_degC_mean']:+.2f} -> "
            f"{a['net_minus_eef_degC_mean']:+.2f} degC"
        )
    print(f"wrote {args.out}")
    return 0


def _campaign_and_forward(args: argparse.Namespace) -> tuple:
    """The usable frames of ``--campaign`` and its forward report (``--forward-json``, or
    fitted here with ``field_focus``)."""
    from plato_cnn.forward import forward_bft
    from plato_cnn.reader import read_campaign

    fr = read_campaign(args.campaign)
    fr = fr.select(fr.usable)
    if args.forward_json:
        return fr, _read_report(args.forward_json)
    return fr, forward_bft(fr, field_focus=True, device=args.device, seed=args.seed)


def _cmd_offset_correction(args: argparse.Namespace) -> int:
    from plato_cnn.offset_correction import measure_offset_correction

    fr, report = _campaign_and_forward(args)
    corr = measure_offset_correction(fr, report, args.model, args.device, seed=args.seed)
    corr.save(args.out)
    s, s_sig = corr.s_prior_um_per_degC
    print(
        f"{fr.camera}: {len(corr.theta_deg)} field positions x {len(corr.plateau_degC)} "
        f"plateaux; the model's offsets minus the physics labels {corr.spread_um:.2f} um RMS "
        f"per (field, plateau), standard errors {corr.noise_um:.2f} um RMS; s prior "
        f"{s:.3f} +- {s_sig:.3f} um/degC"
    )
    print(f"wrote {args.out}")
    return 0


def _cmd_ground_calibration(args: argparse.Namespace) -> int:
    from plato_cnn.ground_calibration import measure_ground_calibration

    fr, report = _campaign_and_forward(args)
    cal = measure_ground_calibration(fr, report, args.model, args.device)
    cal.save(args.out)
    print(
        f"{cal.camera}: {len(cal.theta_deg)} field positions x {len(cal.plateau_degC)} "
        f"plateaux; the in-orbit model's offsets minus the physics labels {cal.spread_um:.2f} "
        f"um RMS per (field, plateau), standard errors {cal.noise_um:.2f} um RMS; ground "
        f"T_BF {cal.ground_bft_degC:.2f} +- {cal.ground_bft_sigma_degC:.2f} degC"
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


def _cmd_calibrate_residual(args: argparse.Namespace) -> int:
    from plato_cnn.pipelines.calibrate_residual import calibrate_residual_check

    r = calibrate_residual_check(
        args.model, args.workdir, args.cameras, workers=args.workers, write=not args.dry_run
    )
    for n, st in r["by_plateaux"].items():
        o = st["outside"]
        print(
            f"{n} plateaux: threshold {r['threshold_um'][n]:.2f} um (in family: median "
            f"{st['in_family']['residual_um_median']:.2f}), k {r['sigma_per_residual'][n]:.3f}; "
            f"other families: {100 * o['frac_flagged']:.0f} % flagged, coverage "
            f"{100 * o['coverage_before']:.0f} -> {100 * o['coverage_after']:.0f} %"
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
        args.workers, PlateauHeadConfig(epochs=args.epochs, min_fields=args.min_fields),
        write=not args.dry_run,
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


# ----------------------------------------------------------------------------- field-head
def calibration_set_arg(text: str) -> tuple[str, int, int]:
    """``FAMILY:SEED:CAMERAS`` -> ``(family, seed, cameras)`` (an argparse type; the field-head
    bench uses it too)."""
    parts = text.split(":")
    try:
        family, seed, n = parts[0], int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected FAMILY:SEED:CAMERAS") from None
    if len(parts) != 3 or seed < 0 or n < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected FAMILY:SEED:CAMERAS, seed >= 0, cameras >= 1"
        )
    return family, seed, n


def _cmd_field_head(args: argparse.Namespace) -> int:
    from plato_cnn.pipelines.field_head import (
        CALIBRATION_FAMILIES,
        FieldHeadTrainConfig,
        calibrate_field_head,
        calibration_campaigns,
        measure_family_term,
        train_field_head,
    )
    from plato_sim.errors import ParameterError

    if not (args.dataset or args.calibrate or args.family_reference):
        raise ParameterError(
            "field-head: give --dataset (train), --calibrate, --family-reference, or several"
        )
    if bool(args.family_reference) != bool(args.family_sets):
        raise ParameterError("field-head: --family-reference and --family-sets go together")
    sets = (args.calibrate or []) + (args.family_sets or [])
    unknown = sorted({f for f, _, _ in sets if f not in CALIBRATION_FAMILIES})
    if unknown:  # before hours of training, not after
        raise ParameterError(
            f"--calibrate: unknown family {', '.join(unknown)}; allowed "
            f"{', '.join(CALIBRATION_FAMILIES)} (the nodal family never calibrates)"
        )
    if args.dataset:
        window = tuple(args.window_degC) if args.window_degC else None
        cfg = FieldHeadTrainConfig(steps=args.steps, seed=args.seed, window_degC=window,
                                   window_fraction=args.window_fraction,
                                   moments=args.moments)  # fmt: skip
        s = train_field_head(args.dataset, args.out, args.model, cfg, args.device)
        rmse = ", ".join(f"{k}: {v:.2f}" for k, v in s["holdout_rmse_per_field_degC"].items())
        print(
            f"{s['n_train_series']} training series; {s['holdout_cameras']} held-out cameras, "
            f"per-field RMS error by plateau count (degC) {rmse}"
        )
    if args.calibrate:
        campaigns = calibration_campaigns(args.cache, args.calibrate, args.workers)
        block = calibrate_field_head(args.out, campaigns, args.model, args.device)
        for k, r in block["per_count"].items():
            print(
                f"{k} plateaux: RMS {r['rms_error_degC']:.3f} degC on {len(campaigns)} "
                f"calibration cameras, systematic term {r['systematic_sigma_degC']:.3f} degC, "
                f"coverage "
                f"{100 * r['coverage']:.0f} %"
            )
    if args.family_reference:
        held = calibration_campaigns(args.cache, args.family_sets, args.workers)
        block = measure_family_term(args.out, args.family_reference, held, args.model, args.device)
        for k, r in block["per_count"].items():
            print(
                f"{k} plateaux: reference head RMS {r['rms_error_degC']:.3f} degC on {len(held)} "
                f"cameras of families it never saw, out-of-family term "
                f"{r['systematic_sigma_degC']:.3f} degC"
            )
    print(f"wrote {args.out}")
    return 0


def _kept_forward_fit(frames, k: int, args: argparse.Namespace) -> dict:
    """The forward fit (``field_focus``) of one campaign, written at once under OUT/forward
    (minutes each: a later run takes them back with ``--forward-json``)."""
    from plato_cnn.pipelines.finetune import fit_forward_reports, name_slug
    from plato_cnn.report import write_json

    report = fit_forward_reports([frames], None, args.seed)[0]
    path = Path(args.out) / "forward" / f"{k:02d}_{name_slug(frames.camera)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    print(f"{frames.camera}: forward fit kept in {path}")
    return report


def _cmd_field_head_finetune(args: argparse.Namespace) -> int:
    from plato_cnn.pipelines.field_head_finetune import (
        FieldHeadFinetuneConfig,
        finetune_field_head,
    )
    from plato_cnn.pipelines.finetune import fit_forward_reports
    from plato_cnn.reader import read_campaign
    from plato_cnn.report import refuse_inside_inputs

    cfg = FieldHeadFinetuneConfig(variants=args.variants, steps=args.steps, lr=args.lr,
                                  l2sp=args.l2sp, seed=args.seed)  # fmt: skip
    inputs = [i for i in (*args.campaign, args.field_head, args.model) if i is not None]
    for out in (args.out, args.workdir):
        if out is not None:
            refuse_inside_inputs(out, inputs)
    frames = []
    for d in args.campaign:
        fr = read_campaign(d)
        frames.append(fr.select(fr.usable))
    if args.forward_json:
        given = [_read_report(p) for p in args.forward_json]
        reports = fit_forward_reports(frames, given, args.seed)
    else:
        reports = [_kept_forward_fit(fr, k, args) for k, fr in enumerate(frames)]
    cv = len(frames) >= 3
    workdir = args.workdir or str(Path(args.out) / "variants")
    s = finetune_field_head(reports, args.out, workdir, args.field_head, args.model, cfg,
                            args.device, args.workers, frames if cv else None)  # fmt: skip
    for fr, r in zip(frames, reports, strict=True):
        print(f"{fr.camera}: forward T_BF {r['bft_degC']:.3f} degC, chi2_red "
              f"{r['chi2']['reduced']:.2f}")  # fmt: skip
    print(f"{s['n_series']} variant series; fine-tuned in {s['seconds_total']:.0f} s")
    if cv:
        for k, r in s["cross_validation"].items():
            print(
                f"{k} plateaux: leave-one-camera-out RMS {r['rms_error_degC']:.3f} degC on "
                f"{r['n_fits']} cameras, systematic term {r['systematic_sigma_degC']:.3f} degC"
            )
    else:
        print(
            "fewer than 3 campaigns: no leave-one-camera-out sigma; the starting head's "
            "systematic terms are kept (plato-cnn field-head --out HEAD --calibrate ... "
            "measures new ones)"
        )
    print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------- focus-check
def _cmd_focus_check(args: argparse.Namespace) -> int:
    from plato_sim.errors import ParameterError

    if args.forward_json is not None:
        if args.model is not None or args.ground_calibration is not None:
            raise ParameterError(
                "--forward-json checks by forward modelling: no --model or --ground-calibration"
            )
        from plato_cnn.focuscheck_forward import forward_focus_check_file

        report = forward_focus_check_file(args.imagettes, args.temperature_degC, args.forward_json)
    else:
        from plato_cnn.focuscheck import focus_check_file

        report = focus_check_file(
            args.imagettes, args.temperature_degC, args.model, args.device, args.ground_calibration
        )
    for w in report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"{report['camera']}: focal shift {report['shift_um']:+.1f} +- "
        f"{report['shift_sigma_um']:.1f} um from best focus; change TRP1 by "
        f"{report['delta_t_degC']:+.2f} +- {report['delta_t_sigma_degC']:.2f} degC "
        f"(to {report['target_degC']:.2f} degC; {report['n_used']} of {report['n_stars']} "
        f"stars used{'; side of focus ambiguous' if report.get('sign_ambiguous') else ''})"
    )
    if args.json:
        from plato_cnn.report import write_json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, report)
    return 0


def _bft_report(args: argparse.Namespace, campaign_dir: str) -> dict:
    """Read one campaign and run ``args.method`` on it: the full report."""
    from plato_cnn.reader import read_campaign
    from plato_cnn.report import campaign_report

    frames = read_campaign(campaign_dir, obsids=args.obsids, strict=args.strict)
    result = BFT_METHODS[args.method][1](args, frames)
    return campaign_report(frames, campaign_dir, args.method, result)


def _bft_batch_job(job: tuple[argparse.Namespace, str, str]) -> dict:
    """One campaign of a batch (worker process): write its report, return its summary row."""
    from plato_cnn.report import write_json
    from plato_sim.errors import PlatoFocusError
    from plato_sim.workers import pin_one_thread

    args, campaign_dir, name = job
    pin_one_thread()
    row = {"campaign": str(Path(campaign_dir).resolve()), "method": args.method}
    path = Path(args.out_dir) / name
    plot = str(path.with_suffix(".png")) if args.plots else None
    args = argparse.Namespace(**{**vars(args), "plot": plot})
    try:
        out = _bft_report(args, campaign_dir)
        write_json(path, out)
    except (PlatoFocusError, OSError) as exc:
        return {**row, "error": " ".join(str(exc).split())}
    return {
        **row,
        "camera": out["camera"],
        "bft_degC": out["bft_degC"],
        "sigma_degC": out["sigma_degC"],
        "n_plateaux": out.get("n_plateaux", len(out.get("obsids", []))),
        "frames_used": out["frames_used"],
        "frames_dropped": out["frames_dropped"],
        "warnings": len(out["warnings"]),
        "report": str(path),
    }


def _cmd_bft_batch(args: argparse.Namespace) -> int:
    from plato_cnn.batch import report_names, run_campaigns, write_summary
    from plato_cnn.report import check_output_path

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = check_output_path(out_dir / "summary.csv", inputs=args.campaign_dir)
    names = report_names(args.campaign_dir)
    jobs = [(args, d, n) for d, n in zip(args.campaign_dir, names, strict=True)]
    rows = run_campaigns(_bft_batch_job, jobs, args.workers, args.scheduler)
    write_summary(summary, rows)
    for r in rows:
        if r.get("error"):
            print(f"{r['campaign']}: failed: {r['error']}", file=sys.stderr)
        else:
            print(
                f"{r['camera']}: BFT = {r['bft_degC']:.2f} +- {r['sigma_degC']:.2f} degC "
                f"({r['frames_used']} frames used, {r['warnings']} warnings)"
            )
    n_bad = sum(1 for r in rows if r.get("error"))
    print(f"{len(rows) - n_bad} of {len(rows)} campaigns done; summary: {summary}")
    return 2 if n_bad == len(rows) else 0


def _cmd_bft(args: argparse.Namespace) -> int:
    from plato_cnn.report import check_output_path, write_json
    from plato_sim.errors import ParameterError

    if len(args.campaign_dir) > 1 or args.out_dir:
        if args.json or args.plot:
            raise ParameterError(
                "--json and --plot name one file: with --out-dir each campaign's report goes "
                "there (and its plot with --plots)"
            )
        if not args.out_dir:
            raise ParameterError("several campaigns need --out-dir (one report each there)")
        out = Path(args.out_dir).resolve()
        for d in args.campaign_dir:
            if Path(d).resolve() in (out, *out.parents):
                raise ParameterError(f"--out-dir {args.out_dir} lies inside the input {d}")
        return _cmd_bft_batch(args)
    if args.workers != 1 or args.scheduler:
        raise ParameterError("--workers and --scheduler need several campaigns and --out-dir")
    campaign_dir = args.campaign_dir[0]
    for out_path in (args.json, args.plot):
        if out_path:
            check_output_path(out_path, inputs=[campaign_dir])
    out = _bft_report(args, campaign_dir)
    frames_camera = out["camera"]
    for w in out["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"{frames_camera}: BFT = {out['bft_degC']:.2f} +- {out['sigma_degC']:.2f} degC "
        f"({args.method}, {out.get('fit', '')}; {out['frames_used']} frames used, "
        f"{out['frames_dropped']} dropped)"
    )
    if args.json:
        write_json(args.json, out)
    return 0


def _add_camera_fit_args(p: argparse.ArgumentParser, model_help: str, written: str) -> None:
    """The flags of a one-camera measurement from a campaign and its forward fit."""
    p.add_argument(
        "--campaign", required=True, type=existing_dir, help="campaign folder (format v1)"
    )
    p.add_argument(
        "--forward-json",
        type=existing_file,
        default=None,
        help="its forward report (bft --method forward --field-focus; default: fit it, minutes)",
    )
    p.add_argument("--model", type=existing_dir, default=None, help=model_help)
    p.add_argument(
        "--out", required=True, type=output_file(), help=f"{written} file written (JSON)"
    )
    p.add_argument("--device", type=torch_device, default="cpu", help="torch device")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the forward fit")


# Long because: the whole command line in one place, every flag with its type, range and help.
def _parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="plato-cnn", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_verbosity(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bft", help="best-focus temperature of a ground-test campaign")
    p.add_argument(
        "campaign_dir",
        nargs="+",
        help="campaign folder(s) (format v1); several need --out-dir (one report each)",
    )
    p.add_argument(
        "--out-dir",
        default=None,
        help="batch mode: folder for one FOLDER.json per campaign and summary.csv",
    )
    p.add_argument(
        "--workers",
        type=int_in(1),
        default=1,
        help="batch mode: campaigns processed at once in local processes",
    )
    p.add_argument(
        "--scheduler", default=None, help="batch mode: address of a Dask scheduler instead"
    )
    p.add_argument(
        "--plots", action="store_true", help="batch mode: also a FOLDER.png per campaign"
    )
    p.add_argument("--method", choices=tuple(BFT_METHODS), default="eef", help="estimator")
    p.add_argument(
        "--obsids",
        type=int_list_in(0),
        default=None,
        metavar="ID,ID,...",
        help="plateaux (OBSIDs) to use, e.g. 1024,1035 (default: all)",
    )
    p.add_argument("--json", type=output_file(), default=None, help="write the report here")
    p.add_argument(
        "--plot", type=output_file(), default=None, help="PNG of EEF vs temperature, fit and BFT"
    )
    p.add_argument("--strict", action="store_true", help="fail on the first bad file")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the uncertainty draws")
    for add_args, _run in BFT_METHODS.values():
        add_args(p)
    p.set_defaults(func=_cmd_bft)

    p = sub.add_parser("pretrain", help="pretrain FocusNet on a synthetic dataset")
    p.add_argument(
        "--data", type=existing_dir, required=True, help="dataset folder (plato-sim generate)"
    )
    p.add_argument("--out", required=True, help="model directory (rerun to resume)")
    p.add_argument("--epochs", type=int_in(1), default=20, help="training epochs")
    p.add_argument("--batch-size", type=int_in(1), default=256, help="samples per step")
    p.add_argument(
        "--lr", type=float_in(0.0, None, lo_open=True), default=2e-3, help="peak learning rate"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the split, weights and order")
    p.add_argument("--workers", type=int_in(0), default=0, help="DataLoader worker processes")
    p.add_argument(
        "--max-steps-per-epoch", type=int_in(0), default=0, help="steps per epoch (0: whole split)"
    )
    p.add_argument(
        "--max-val-samples",
        type=int_in(0),
        default=8192,
        help="validation samples (0: all held-out samples)",
    )
    p.add_argument(
        "--patience",
        type=int_in(1),
        default=None,
        help="stop after this many epochs without a better validation loss (default: "
        "TrainConfig's, 5)",
    )
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    p.add_argument("--device", type=torch_device, default="cpu", help="torch device")
    p.add_argument(
        "--crop-px",
        "--crop",
        dest="crop_px",
        type=int_in(8, 64),
        default=20,
        help="network input side (pixels; 8 for 10x10 imagettes)",
    )
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("finetune", help="adapt a model to ground-test campaigns")
    p.add_argument("--campaign", nargs="+", required=True, help="campaign folders (format v1)")
    p.add_argument(
        "--model",
        type=existing_dir,
        default=None,
        help="base model directory (default: the shipped model)",
    )
    p.add_argument("--out", required=True, help="fine-tuned model directory")
    p.add_argument(
        "--synthetic",
        type=existing_dir,
        default=None,
        help="dataset folder replayed against collapse (default: none)",
    )
    p.add_argument(
        "--labels",
        choices=("forward", "eef"),
        default="forward",
        help="forward: each frame's focal offset from its field's best focus under the optics "
        "the forward fit measures on the camera (minutes per camera); eef: EEF-anchored "
        "self-consistent pseudo-labels",
    )
    p.add_argument(
        "--forward-json",
        nargs="+",
        type=existing_file,
        default=None,
        help="forward reports made with bft --method forward --field-focus, one per "
        "--campaign in the same order (default: fit each campaign)",
    )
    p.add_argument(
        "--resimulate",
        action="store_true",
        help="with forward labels: also train on each fitted camera re-simulated at its T_BF "
        "-6..+6 degC, exact labels (campaigns kept under OUT/resimulated; ~1 min per camera)",
    )
    p.add_argument(
        "--variants",
        type=int_in(0),
        default=0,
        help="with --resimulate: also this many cameras like each fitted one (turned, mirrored, "
        "each Noll term and the diffusion scaled; docs/cnn.md section 5), ~5 s each",
    )
    p.add_argument(
        "--epochs",
        type=int_in(1),
        default=16,
        help="most fine-tuning epochs (with forward labels training stops earlier when the "
        "fit to the cameras' own labels stops improving: --patience)",
    )
    p.add_argument(
        "--patience",
        type=int_in(0),
        default=2,
        help="with forward labels: stop after this many epochs without a 2 %% better fit to "
        "the cameras' labels and keep the best epoch (0: run every epoch)",
    )
    p.add_argument(
        "--lr", type=float_in(0.0, None, lo_open=True), default=3e-4, help="learning rate"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the fine-tuning")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser(
        "offset-correction",
        help="per-field correction of a model's offsets on one camera, from one campaign and "
        "its forward fit (for bft --offset-correction on the camera's later campaigns)",
    )
    _add_camera_fit_args(p, "model directory (default: the shipped model)", "correction")
    p.set_defaults(func=_cmd_offset_correction)

    p = sub.add_parser(
        "calibrate", help="calibrate a model's systematic sigma on emulated calibration cameras"
    )
    p.add_argument(
        "--model",
        type=existing_dir,
        required=True,
        help="model directory (its model.json is updated)",
    )
    p.add_argument("--workdir", default="out/calibration", help="calibration campaigns (cache)")
    p.add_argument("--cameras", type=int_in(1), default=40, help="calibration cameras")
    p.add_argument("--seed", type=SEED, default=91_000, help="calibration camera set seed")
    p.add_argument("--workers", type=int_in(1), default=2, help="worker processes")
    p.add_argument("--dry-run", action="store_true", help="measure, do not write model.json")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser(
        "calibrate-residual",
        help="calibrate a model's thermal-residual check (in-family threshold, widening "
        "measured on other optical families)",
    )
    p.add_argument(
        "--model", type=existing_dir, required=True, help="model directory (model.json updated)"
    )
    p.add_argument(
        "--workdir", default="out/calibration_families", help="calibration campaigns (cache)"
    )
    p.add_argument("--cameras", type=int_in(1), default=12, help="cameras of each family")
    p.add_argument("--workers", type=int_in(1), default=2, help="worker processes")
    p.add_argument("--dry-run", action="store_true", help="measure, do not write model.json")
    p.set_defaults(func=_cmd_calibrate_residual)

    p = sub.add_parser(
        "plateau-head",
        help="train a model's camera-level correction of each plateau on emulated cameras",
    )
    p.add_argument(
        "--model",
        type=existing_dir,
        required=True,
        help="model directory (the head is stored there)",
    )
    p.add_argument("--workdir", default="out/plateau_head", help="training campaigns (cache)")
    p.add_argument("--cameras", type=int_in(1), default=1140, help="emulated training cameras")
    p.add_argument(
        "--validation-cameras",
        type=int_in(0),
        default=40,
        help="of those, held out (fewer than --cameras)",
    )
    p.add_argument("--seed", type=SEED, default=95_000, help="training camera set seed")
    p.add_argument("--epochs", type=int_in(1), default=150, help="training epochs")
    p.add_argument(
        "--min-fields",
        type=int_in(1),
        default=None,
        help="train on random tables of this many to all field positions (the head then "
        "serves any table that large; default: whole tables only)",
    )
    p.add_argument("--workers", type=int_in(1), default=2, help="worker processes")
    p.add_argument("--dry-run", action="store_true", help="train and report, do not write")
    p.set_defaults(func=_cmd_plateau_head)

    p = sub.add_parser(
        "field-head",
        help="train (and calibrate) the field head: a field position's plateaux -> its best focus",
    )
    p.add_argument(
        "--dataset",
        type=existing_dir,
        default=None,
        help="through-focus dataset (plato-sim generate --config "
        "plato_cnn/data/field_head_dataset.yaml); without it, only --calibrate runs",
    )
    p.add_argument("--out", required=True, help="field head directory (written)")
    p.add_argument(
        "--model",
        type=existing_dir,
        default=None,
        help="the FocusNet the head reads (default: the shipped model)",
    )
    p.add_argument("--steps", type=int_in(1), default=48_000, help="training steps")
    p.add_argument("--seed", type=SEED, default=0, help="training seed")
    p.add_argument(
        "--window-degC",
        type=float_in(0.0, lo_open=True, unit="degC"),
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="read a fraction of the training series as a test campaign would: only the "
        "states within a TRP1 window of width uniform in LO-HI degC that holds the field's "
        "best focus anywhere (default: every series' states at random)",
    )
    p.add_argument(
        "--window-fraction",
        type=float_in(0.0, 1.0),
        default=0.5,
        help="with --window-degC: the fraction of the series so read",
    )
    p.add_argument(
        "--moments",
        type=int,
        nargs="?",
        const=1,
        default=0,
        choices=(1, 2),
        help="the head also reads each stamp's image moments (ensquared energy, size, "
        "elongation, asymmetry; docs/cnn.md section 7): set 1 (the flag alone) or set 2 (the "
        "shipped head's: also encircled energies, wide-weight shape, trefoil)",
    )
    p.add_argument(
        "--calibrate",
        type=calibration_set_arg,
        nargs="+",
        default=None,
        metavar="FAMILY:SEED:CAMERAS",
        help="calibration sets (families design, highorder, highorder-mild) that set the "
        "systematic sigma per plateau count",
    )
    p.add_argument(
        "--family-reference",
        type=existing_dir,
        default=None,
        metavar="HEAD",
        help="a calibrated head trained without the families of --family-sets: its errors "
        "there set the out-of-family term of --out (sigma added where the camera is flagged "
        "outside the families the network knows)",
    )
    p.add_argument(
        "--family-sets",
        type=calibration_set_arg,
        nargs="+",
        default=None,
        metavar="FAMILY:SEED:CAMERAS",
        help="with --family-reference: calibration sets of families that head never saw",
    )
    p.add_argument(
        "--cache", default="out/out_of_family_cache", help="calibration campaigns (cache)"
    )
    p.add_argument("--workers", type=int_in(1), default=2, help="emulation processes")
    p.add_argument("--device", type=torch_device, default="cpu", help="torch device")
    p.set_defaults(func=_cmd_field_head)

    p = sub.add_parser(
        "field-head-finetune",
        help="fine-tune the field head on cameras like forward-fitted ones of a new family",
    )
    p.add_argument("--campaign", nargs="+", required=True, help="campaign folders (format v1)")
    p.add_argument("--out", required=True, help="fine-tuned field head directory (written)")
    p.add_argument(
        "--forward-json",
        nargs="+",
        type=existing_file,
        default=None,
        help="forward reports made with bft --method forward --field-focus, one per "
        "--campaign in the same order (default: fit each campaign, minutes each, and keep "
        "the fits under OUT/forward)",
    )
    p.add_argument(
        "--field-head",
        type=existing_dir,
        default=None,
        help="the head to start from (default: the shipped one)",
    )
    p.add_argument(
        "--model",
        type=existing_dir,
        default=None,
        help="the FocusNet the head reads (default: the shipped model)",
    )
    p.add_argument(
        "--variants",
        type=int_in(1),
        default=24,
        help="cameras like each fitted one, imaged through focus (~5 s each)",
    )
    p.add_argument("--steps", type=int_in(1), default=1500, help="fine-tuning steps")
    p.add_argument(
        "--lr", type=float_in(0.0, None, lo_open=True), default=3e-4, help="learning rate"
    )
    p.add_argument(
        "--l2sp",
        type=float_in(0.0, None),
        default=1e-2,
        help="weight of the pull towards the starting head's weights",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the variants and the training")
    p.add_argument(
        "--workdir",
        default=None,
        help="where the variants' campaigns are kept (default: OUT/variants; a rerun reads "
        "them back)",
    )
    p.add_argument("--workers", type=int_in(1), default=2, help="emulation processes")
    p.add_argument("--device", type=torch_device, default="cpu", help="torch device")
    p.set_defaults(func=_cmd_field_head_finetune)

    p = sub.add_parser("focus-check", help="in orbit: TRP1 change to best focus from imagettes")
    p.add_argument(
        "imagettes", type=existing_file, help="imagette FITS file (plato_sim.io.imagette_format)"
    )
    p.add_argument(
        "--temperature-degC",
        type=temperature_degC,
        required=True,
        help="TRP1 temperature at the imagettes (degC)",
    )
    p.add_argument(
        "--model",
        type=existing_dir,
        default=None,
        help="model directory (default: the in-orbit model)",
    )
    p.add_argument(
        "--ground-calibration",
        type=existing_file,
        default=None,
        help="the camera's ground calibration (plato-cnn ground-calibration): the network's "
        "bias, field map and thermal curve from its ground test replace the design's",
    )
    p.add_argument(
        "--forward-json",
        type=existing_file,
        default=None,
        help="the camera's ground forward report (plato-cnn bft --method forward "
        "--field-focus): check by forward modelling the imagettes with the optics it "
        "measured, no network (docs/inorbit.md, section 7)",
    )
    p.add_argument(
        "--json", type=output_file(make_parents=True), default=None, help="write the report here"
    )
    p.add_argument("--device", type=torch_device, default="cpu", help="torch device")
    p.set_defaults(func=_cmd_focus_check)

    p = sub.add_parser(
        "ground-calibration",
        help="in orbit: the in-orbit network's bias, field map and thermal curve measured on "
        "one camera's ground campaign and its forward fit (for focus-check --ground-calibration)",
    )
    _add_camera_fit_args(
        p, "in-orbit model directory (default: the shipped in-orbit model)", "calibration"
    )
    p.set_defaults(func=_cmd_ground_calibration)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``plato-cnn``."""
    args = _parser().parse_args(fix_negative_values(list(sys.argv[1:] if argv is None else argv)))
    return run_command("plato-cnn", args)


if __name__ == "__main__":
    raise SystemExit(main())
