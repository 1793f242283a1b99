"""The CNN estimate of a camera's best-focus temperature from its campaign frames.

Frames (from :func:`plato_cnn.reader.read_campaign`) -> FocusNet offsets per frame ->
:func:`plato_cnn.fit.fit_bft` (thermal model, EEF-template maximum, bootstrap sigma).
Works with any subset of plateaux, down to one (then ``s`` is the prior's and the side of
focus comes from the network's sign head; ``sign_ambiguous`` says when it cannot decide).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plato_cnn.fit import FocusFit, fit_bft
from plato_cnn.nn.card import ModelCard, default_model_dir, load_model
from plato_sim.errors import DataError, ParameterError, warn
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, Camera
from plato_sim.stamps import ccd_to_focal_plane_orientation

__all__ = [
    "FORWARD_ADVICE",
    "NO_CALIBRATION",
    "NO_RESIDUAL",
    "cnn_bft",
    "apply_residual_check",
    "predict_frames",
    "network_stamps",
    "unchecked_family_message",
    "unchecked_reason",
]


def network_stamps(frames, camera: Camera = PLATO_NORMAL_CAMERA) -> np.ndarray:
    """The frames' stamps turned from their CCD's pixel axes to focal-plane axes.

    The network's input contract (:mod:`plato_cnn.nn.model`) is focal-plane orientation, the
    frame in which the field azimuth ``phi`` and the aberrations are defined; each CCD sees
    the focal plane rotated by its orientation (an exact 90-degree permutation).
    """
    return ccd_to_focal_plane_orientation(frames.stamps, frames.ccd, camera.ccd_orientation_deg)


def predict_frames(frames, model_dir: str | Path | None = None, device: str = "cpu") -> dict:
    """FocusNet outputs for every frame: ``mu_um``, ``sigma_um``, ``p_behind`` and the model."""
    model, card = load_model(model_dir or default_model_dir(), device)
    pred = model.predict(
        network_stamps(frames), frames.field_theta_deg, frames.field_phi_deg, device=device
    )
    pred["model_card"] = card
    return pred


# Long because: the inference path in order (network, plateau head, thermal-model
# fit, systematic sigma, report), kept in one place so that a reader sees every step.
def cnn_bft(
    frames,
    model_dir: str | Path | None = None,
    n_boot: int = 200,
    seed: int = 0,
    device: str = "cpu",
    include_unstable: bool = False,
    systematic: bool = True,
    s_prior: tuple[float, float] | None = None,
    plateau_head: bool = True,
    residual_check: bool = True,
    offset_correction=None,
    predictions: dict | None = None,
) -> tuple[FocusFit, dict]:
    """Best-focus temperature of one camera from its (usable) frames.

    Args:
        frames: :class:`plato_cnn.reader.CampaignFrames` (already restricted to the chosen
            OBSIDs).
        model_dir: a model directory (default: the model shipped with the package).
        n_boot: bootstrap replicates for the 1-sigma uncertainty.
        seed: bootstrap seed.
        device: torch device.
        include_unstable: also use frames of observations that were not a plateau.
        systematic: add the model's calibrated systematic sigma
            (:mod:`plato_cnn.pipelines.calibrate`) in quadrature to the bootstrap sigma.
        s_prior: ``(mean, sigma)`` of the thermal sensitivity (um/degC) replacing the model's
            prior; decisive with one plateau.  The best source is an earlier sweep of the same
            camera fitted with the same model: its ``s`` is in the network's own scale, so a
            per-camera scale error of the network cancels too.
        residual_check: apply the model's calibrated thermal-residual check (with
            ``systematic``): a fit whose offsets depart from the thermal model by more than
            the in-family calibration cameras did is flagged outside the model and its sigma
            widened (:func:`apply_residual_check`).
        offset_correction: a :class:`plato_cnn.offset_correction.OffsetCorrection` measured
            with this model on an earlier campaign of the same camera: each frame's offset is
            corrected by its field's bias at its temperature; the plateau head is then not
            used (it corrects the uncorrected network's plateau means), and the correction's
            s prior (its own fit of that campaign) serves unless ``s_prior`` is given.  With
            the earlier campaign's forward fit in the correction, ``info["recheck"]`` is the
            T_BF from the focus change since then
            (:meth:`plato_cnn.offset_correction.OffsetCorrection.recheck`).
        predictions: the network's outputs for the usable frames, in their order (``mu_um``,
            ``sigma_um``, ``p_behind``; e.g. :func:`plato_cnn.nn.field_head.network_outputs`
            of a pass made for the field head), so that the network does not run again;
            they must come from the model of ``model_dir``.

    Returns:
        ``(fit, info)`` with ``info`` holding the frame counts and the model's description.
    """
    from plato_cnn.reader import FLAG_UNSTABLE

    if s_prior is None and offset_correction is not None:
        s_prior = offset_correction.s_prior_um_per_degC

    ignore = FLAG_UNSTABLE if include_unstable else 0
    use = (frames.flags & ~np.uint16(ignore)) == 0
    if not np.any(use):
        raise ParameterError("no usable frame for the CNN estimate")
    sel = frames.select(use)
    if predictions is None:
        pred = predict_frames(sel, model_dir, device)
    else:
        pred = {k: np.asarray(predictions[k]) for k in ("mu_um", "sigma_um", "p_behind")}
        if any(len(v) != len(sel) for v in pred.values()):
            raise ParameterError(f"predictions for {len(pred['mu_um'])} frames, "
                                 f"{len(sel)} usable")  # fmt: skip
        pred["model_card"] = load_model(model_dir or default_model_dir(), device)[1]
    card: ModelCard = pred["model_card"]
    prior = tuple(s_prior or card.s_prior_um_per_degC)
    if not (np.isfinite(prior[0]) and prior[0] != 0 and np.isfinite(prior[1]) and prior[1] > 0):
        raise ParameterError(f"s prior {prior}: need a finite non-zero mean and a sigma > 0")
    mu, sigma = pred["mu_um"], pred["sigma_um"]
    if offset_correction is not None:
        mu = offset_correction.apply(sel, mu, card.sha256())
        plateau_head = False
    corrections: dict[int, float] = {}
    skipped: list[str] = []
    if plateau_head:
        mu, corrections, skipped = _plateau_corrections(sel, pred, model_dir, card, prior[0])
    fit = fit_bft(
        mu,
        sigma,
        sel.temperature_degC,
        sel.field_id,
        p_behind=pred["p_behind"],
        template=card.eef_template,
        s_prior=prior,
        plateau_id=sel.obsid,
        n_boot=n_boot,
        seed=seed,
    )
    if corrections:
        listed = ", ".join(f"{c:+.1f}" for c in corrections.values())
        fit.warnings.append(
            warn(
                f"plateau head: each plateau's mean offset corrected by {listed} um (trained on "
                "the simulator's camera population)"
            )
        )
    fit.warnings.extend(skipped)
    # the calibration made with the head describes fits in which it corrected every plateau
    table = card.sigma
    if len(corrections) < len(np.unique(sel.obsid)) and card.sigma_without_head is not None:
        table = card.sigma_without_head
    # the calibration entry for the largest plateau count not above this fit's; a
    # one-plateau fit with a given s has its own entry (s from an earlier sweep)
    entry = None
    if systematic and table is not None:
        entry = table.entry(fit.n_plateaux, recheck=s_prior is not None and not fit.s_measured)
    if entry is not None:
        _, s_sys, scale = entry
        fit.sigma_degC = float(np.hypot(scale * fit.sigma_degC, s_sys))
        note = f" and the bootstrap scaled by {scale:.2f}" if scale != 1.0 else ""
        fit.warnings.append(
            warn(f"sigma includes the calibrated systematic {s_sys:.2f} degC{note}")
        )
    elif systematic:
        fit.warnings.append(warn("model has no sigma calibration: sigma is the bootstrap's only"))
    check = apply_residual_check(fit, card) if systematic and residual_check else None
    info = {
        "frames_used": int(use.sum()),
        "model": str(model_dir or default_model_dir()),
        "model_version": card.package_version,
        "model_card_sha256": card.sha256(),
        "frame_mu_um": pred["mu_um"],  # the network's own offsets (the re-check corrects them)
        "frame_mu_fitted_um": mu,  # after the offset correction or plateau head: what was fitted
        "frame_sigma_um": pred["sigma_um"],
        "plateau_head_correction_um": corrections or None,
        "offset_correction": None
        if offset_correction is None
        else {
            "camera": offset_correction.camera,
            "spread_um": offset_correction.spread_um,
            "noise_um": offset_correction.noise_um,
        },
        "recheck": _recheck(
            offset_correction, sel, pred["mu_um"], fit, "finetune" in pred["model_card"]
        ),
        "thermal_residual": check
        or {"residual_um": fit.thermal_residual_um, "ran": False, "outside": False},
    }
    return fit, info


def _recheck(correction, frames, mu_um, fit: FocusFit, fine_tuned: bool = False) -> dict | None:
    """The correction's re-check of these frames, or None (without the earlier campaign's
    forward fit, or when no frame lies at one of its field positions: a warning).  A
    re-check whose network barely follows the camera's focus gets a warning (its sigma is
    already divided by that sensitivity); so does one by a fine-tuned network
    (``sigma_calibrated`` false: the sigma's terms were calibrated, and measured to hold, with
    networks that were not fine-tuned on the camera; for fine-tuned ones it was measured too
    narrow in family and out; docs/cnn.md)."""
    if correction is None or not correction.first:
        return None
    try:
        r = correction.recheck(frames, mu_um)
    except DataError as exc:
        fit.warnings.append(warn(f"no re-check: {exc}"))
        return None
    r["sigma_calibrated"] = not fine_tuned
    if fine_tuned:
        fit.warnings.append(
            warn(
                "re-check by a fine-tuned network: its sigma was calibrated with networks not "
                "fine-tuned on the camera, and for fine-tuned ones it covered far fewer "
                "cameras, in family and out (docs/cnn.md, 'Re-check of a known camera'); the "
                "model without fine-tuning is the one whose sigma holds"
            )
        )
    if r["outside_model"]:
        fit.warnings.append(
            warn(
                f"outside what the model knows: corrected by the earlier campaign's table, the "
                f"network shows {r['sensitivity']:.2f} of a focus change (below "
                f"{r['sensitivity_outside']:.3f}, 0.9 times the least seen in family); the "
                "re-check's sigma is divided by it"
            )
        )
    return r


#: what a report whose camera the network does not know (or could not check) advises
FORWARD_ADVICE = (
    "the forward method (--method forward) fits this camera's own optics instead "
    "(docs/forward.md, 'Out of family')"
)


#: why a fit with a calibrated threshold could still not be checked
NO_RESIDUAL = "the fit gave no thermal residual"
#: why a fit of a model without the check is not checked
NO_CALIBRATION = "the model has no thermal-residual calibration"


def unchecked_reason(n_plateaux: int) -> str:
    """Why the thermal-residual check cannot judge a fit of ``n_plateaux`` plateaux."""
    if n_plateaux < 2:
        return (
            "with one plateau every field's focus is free and the thermal residual has no "
            "calibrated threshold"
        )
    return f"the model's residual check has no threshold for {n_plateaux} plateaux"


def unchecked_family_message(n_plateaux: int, reason: str | None = None) -> str:
    """The warning of an estimate whose camera could not be checked against the families the
    network was trained on (``reason``, by default :func:`unchecked_reason`): its sigma holds
    only for cameras like those."""
    why = reason or unchecked_reason(n_plateaux)
    return (
        f"whether the camera is like the network's training cameras is not checked ({why}): "
        "sigma holds for such cameras only; on a camera unlike them the error can be several "
        f"times larger (docs/cnn.md section 7); {FORWARD_ADVICE}"
    )


def apply_residual_check(fit: FocusFit, card: ModelCard) -> dict:
    """The model's thermal-residual check on ``fit`` (changed in place when it fails).

    A fit whose thermal residual (:func:`plato_cnn.fit.thermal_residual_um`) exceeds the largest
    seen among the model's in-family calibration cameras is outside what the model knows:
    its sigma is widened in quadrature by ``k * residual / |s|`` (``k`` calibrated on cameras
    of other optical families, :mod:`plato_cnn.pipelines.calibrate_residual`) and a warning
    says so.  Returns the check's record (``residual_um``, ``threshold_um``, ``ran``,
    ``outside``, ``sigma_before_degC`` when widened; ``reason`` when it did not run).  A model
    that has the check but cannot apply it to ``fit`` (one plateau; a plateau count below its
    calibrated ones; no residual) says so in a warning (:func:`unchecked_family_message`).
    """
    rec = {"residual_um": fit.thermal_residual_um, "ran": False, "outside": False}
    if not card.residual_check:
        return {**rec, "reason": NO_CALIBRATION}
    entry = card.residual_check.entry(fit.n_plateaux)
    if entry is None or not np.isfinite(fit.thermal_residual_um):
        # a model that checks, but not this fit: said, not a quiet sigma
        rec["reason"] = unchecked_reason(fit.n_plateaux) if entry is None else NO_RESIDUAL
        fit.warnings.append(warn(unchecked_family_message(fit.n_plateaux, rec["reason"])))
        return rec
    threshold, k = entry
    rec.update(ran=True, threshold_um=threshold)
    if fit.thermal_residual_um <= threshold:
        return rec
    widen = k * fit.thermal_residual_um / max(abs(fit.s_um_per_degC), 1e-9)
    rec.update(outside=True, sigma_before_degC=fit.sigma_degC)
    fit.sigma_degC = float(np.hypot(fit.sigma_degC, widen))
    fit.warnings.append(
        warn(
            f"outside what the model knows: the offsets depart from the thermal model by "
            f"{fit.thermal_residual_um:.1f} um, more than any in-family calibration camera "
            f"({threshold:.1f} um); sigma widened from {rec['sigma_before_degC']:.2f} to "
            f"{fit.sigma_degC:.2f} degC; {FORWARD_ADVICE}"
        )
    )
    return rec


def _plateau_corrections(
    frames, pred: dict, model_dir, card: ModelCard, s0: float
) -> tuple[np.ndarray, dict[int, float], list[str]]:
    """FocusNet's offsets with each plateau's mean corrected by the model's plateau head.

    Returns ``(mu_um, {obsid: correction_um}, warnings)``; without a head, ``mu`` unchanged.
    A head trained on random field tables (``min_fields``) corrects any plateau with at least
    that many positions; one trained on whole tables only a plateau with at least
    :data:`MIN_FIELD_FRACTION` of the field positions it was trained on, whose pooled
    statistics are those of a full field table (calibration cameras, -80 degC, true s: 40
    fields 0.44 -> 0.20 degC, every other field 0.44 -> 0.31, every fourth 0.45 -> 0.62).
    """
    from plato_cnn.metrics import frame_eef
    from plato_cnn.nn.plateau_head import (
        MIN_FIELD_FRACTION,
        campaign_snapshots,
        load_plateau_head,
        predict_correction_um,
    )

    mu = np.array(pred["mu_um"], float)
    head = load_plateau_head(model_dir or default_model_dir(), card)
    if head is None:
        return mu, {}, []
    training = card.plateau_head.get("training", {})
    n_trained = training.get("fields_per_snapshot")
    n_min = training.get("min_fields_per_snapshot")  # trained on tables of n_min..n_trained
    need = n_min if n_min else (MIN_FIELD_FRACTION * n_trained if n_trained else 0)
    obsids = np.unique(frames.obsid)
    snaps = campaign_snapshots(frames, pred, frame_eef(frames.stamps), s0)
    corrections, skipped = {}, []
    for ob, snap in zip(obsids, snaps, strict=True):
        n_fields = snap.x.shape[0]
        if n_fields < need:
            why = (
                f"it was trained on tables of {n_min}-{n_trained}"
                if n_min
                else f"it was trained on {n_trained} and needs at least "
                f"{MIN_FIELD_FRACTION:.0%} of them"
            )
            skipped.append(
                warn(
                    f"plateau head not used on OBSID {int(ob)} ({n_fields} field positions; {why})"
                )
            )
            continue
        c = predict_correction_um(head, snap.x)
        mu[frames.obsid == ob] += c
        corrections[int(ob)] = c
    return mu, corrections, skipped
