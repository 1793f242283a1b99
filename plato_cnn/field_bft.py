"""T_BF of a campaign from the field head (``plato-cnn bft --method field``; docs/cnn.md section 7).

Every usable frame is read by the shipped (or given) FocusNet, its features are averaged per
field position and plateau, and the field head (:mod:`plato_cnn.nn.field_head`) turns each
field position's series into its best-focus temperature ``T_f``.  T_BF is the mean of the
``T_f``; its sigma is the fields' own sigmas (independent between fields) over their count,
in quadrature with the head's systematic term for that many plateaux, calibrated on emulated
cameras of calibration families that neither the head's training nor any benchmark uses.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from plato_cnn.nn.card import default_model_dir, load_model
from plato_cnn.nn.field_head import (
    FAMILY_TUNED,
    PLATEAU_COUNT_SCALE,
    default_field_head_dir,
    field_series,
    head_features,
    load_field_head,
    network_digest,
    network_outputs,
)
from plato_cnn.predict import (
    FORWARD_ADVICE,
    NO_CALIBRATION,
    network_stamps,
    unchecked_family_message,
)
from plato_sim.errors import ParameterError, warn

log = logging.getLogger(__name__)

__all__ = [
    "estimate_from_features",
    "family_check",
    "field_head_bft",
    "field_head_inputs",
    "with_family_term",
]


def field_head_bft(
    frames,
    model_dir: str | Path | None = None,
    head_dir: str | Path | None = None,
    device: str = "cpu",
    systematic: bool = True,
    outside: bool | None = None,
    seed: int = 0,
) -> dict:
    """The field head's estimate for one campaign's usable frames.

    Args:
        frames: :class:`plato_cnn.reader.CampaignFrames` (already restricted to the chosen
            OBSIDs).
        model_dir: the FocusNet the head reads (default: the shipped one); the head's card
            names its weights by digest and other weights are refused.
        head_dir: a field head directory (default: the shipped one).
        device: torch device.
        systematic: add the head's calibrated systematic term (degC) to sigma.
        outside: whether the camera lies outside the families the network knows; None: ask
            the CNN's thermal-residual check on the same frames (:func:`family_check`).
            Where it does, the head's out-of-family term is added to sigma
            (:func:`with_family_term`).  Only with ``systematic``.
        seed: of the CNN fit behind the check.

    Returns:
        The method part of a report: ``bft_degC``, ``sigma_degC``, ``sigma_stat_degC``,
        ``n_plateaux``, ``field_head`` (per field position: ``t_best_degC``, ``sigma_degC``,
        its position and plateau count) and the model's description.
    """
    use = frames.usable
    if not np.any(use):
        raise ParameterError("no usable frame for the field head")
    sel = frames.select(use)
    head, hcard, card, feats = field_head_inputs(sel, model_dir, head_dir, device)
    est = estimate_from_features(sel, feats, head, hcard.systematic_for if systematic else None)
    if systematic:
        check = None
        if outside is None:
            net_out = network_outputs(feats[:, : head.config.network_dim])
            check = family_check(sel, model_dir, device, seed, net_out)
        flagged = bool(check["outside"]) if check is not None else bool(outside)
        est = with_family_term(est, hcard, flagged, check)
    return {
        "fit": "field-head",
        **est,
        "model": str(model_dir or default_model_dir()),
        "model_version": card.package_version,
        "model_card_sha256": card.sha256(),
        "field_head_dir": str(head_dir or default_field_head_dir()),
    }


def field_head_inputs(
    frames,
    model_dir: str | Path | None = None,
    head_dir: str | Path | None = None,
    device: str = "cpu",
) -> tuple:
    """``(head, head card, model card, features)``: the field head (default: the shipped one),
    checked against the FocusNet of ``model_dir`` (default: the shipped one), and that
    network's stamp features of every frame of ``frames`` (``(N, D)``, with the image moments
    where the head reads them: :func:`plato_cnn.nn.field_head.head_features`); a plateau
    subset of the frames is the same subset of the rows."""
    model_dir = model_dir or default_model_dir()
    net, card = load_model(model_dir, device)
    head, hcard = load_field_head(head_dir or default_field_head_dir(), network_digest(model_dir))
    feats = head_features(
        net, network_stamps(frames), frames.field_theta_deg, frames.field_phi_deg,
        moments=head.config.moments, device=device,
    )  # fmt: skip
    return head, hcard, card, feats


def estimate_from_features(frames, features: np.ndarray, head, systematic_for=None) -> dict:
    """The estimate from the frames' stamp features (:func:`plato_cnn.nn.field_head.
    head_features`, one row per frame of ``frames``): ``bft_degC``, ``sigma_degC``,
    ``sigma_stat_degC``, ``systematic_sigma_degC`` (``systematic_for(n_plateaux)``, degC, or
    None without it), ``obsids``, ``frames_used``, ``n_plateaux``, ``field_head`` and
    ``warnings``."""
    ser = field_series(
        features, frames.field_id, frames.obsid, frames.temperature_degC,
        frames.field_theta_deg, frames.field_phi_deg,
    )  # fmt: skip
    t_f, s_f = head.predict(ser.features, ser.temperature_degC, ser.mask)
    n_pl = len(ser.plateaux)
    warnings = []
    if n_pl > PLATEAU_COUNT_SCALE:
        warnings.append(
            f"{n_pl} plateaux: the field head was trained on series of at most "
            f"{int(PLATEAU_COUNT_SCALE)}; its estimate is extrapolated"
        )
    stat = float(np.sqrt(np.sum(s_f**2)) / len(t_f))
    sys = systematic_for(n_pl) if systematic_for else None
    if systematic_for and sys is None:
        warnings.append("the field head has no calibrated systematic term: sigma is statistical")
    for w in warnings:
        log.warning(w)
    return {
        "bft_degC": float(np.mean(t_f)),
        "sigma_degC": float(np.hypot(stat, sys or 0.0)),
        "sigma_stat_degC": stat,
        "systematic_sigma_degC": sys,
        "obsids": sorted(int(o) for o in ser.plateaux),
        "frames_used": int(len(frames)),
        "n_plateaux": n_pl,
        "field_head": {
            "theta_deg": ser.theta_deg.tolist(),
            "phi_deg": ser.phi_deg.tolist(),
            "t_best_degC": t_f.tolist(),
            "sigma_degC": s_f.tolist(),
            "n_plateaux": ser.mask.sum(axis=1).tolist(),
        },
        "warnings": warnings,
    }


def family_check(
    frames,
    model_dir: str | Path | None = None,
    device: str = "cpu",
    seed: int = 0,
    predictions: dict | None = None,
) -> dict:
    """Whether ``frames`` come from a camera outside the families the network knows: the
    CNN's thermal-residual check (:func:`plato_cnn.predict.apply_residual_check`: the
    network's offsets depart from a thermal model by more than on any in-family calibration
    camera), run on the same frames.  ``predictions``: the network's outputs for them, where
    a pass was made already (:func:`plato_cnn.nn.field_head.network_outputs`).  Returns
    ``ran``, ``outside``, ``residual_um`` and ``threshold_um`` (or ``reason`` when the check
    cannot run: one plateau, no calibration)."""
    from warnings import catch_warnings, simplefilter

    from plato_cnn.predict import cnn_bft
    from plato_sim.errors import PlatoFocusError, PlatoFocusWarning

    try:
        with catch_warnings():  # the CNN estimate's own notes: not this report's
            simplefilter("ignore", PlatoFocusWarning)
            _, info = cnn_bft(frames, model_dir, n_boot=2, seed=seed, device=device,
                              predictions=predictions)  # fmt: skip
    except PlatoFocusError as exc:
        return {"ran": False, "outside": False, "reason": f"the CNN fit failed: {exc}"}
    rec = info["thermal_residual"]
    out = {"ran": bool(rec["ran"]), "outside": bool(rec["outside"])}
    if np.isfinite(rec["residual_um"]):  # none where the fit could not compute one
        out["residual_um"] = float(rec["residual_um"])
    if rec["ran"]:
        out["threshold_um"] = float(rec["threshold_um"])
    else:  # the check's own record says why (plato_cnn.predict.apply_residual_check)
        out["reason"] = rec.get("reason", NO_CALIBRATION)
    return out


def with_family_term(est: dict, card, outside: bool, check: dict | None = None) -> dict:
    """``est`` (:func:`estimate_from_features`) with the head's out-of-family term
    (:meth:`~plato_cnn.nn.field_head.FieldHeadCard.family_for`, degC) added in quadrature to
    its sigma where ``outside``; records ``family_check`` and ``outside_model`` and says so in
    a warning.  The term was measured on a family a reference head had never seen (docs/cnn.md
    section 7): not this camera's, an estimate of what a new family costs.  Where the
    ``check`` could not run (one plateau), a warning says that the camera's family was not
    checked and sigma is the in-family one."""
    out = {**est, "warnings": list(est["warnings"])}
    term = card.family_for(est["n_plateaux"]) if outside else None
    given = {"ran": False, "reason": "flagged or cleared by the caller (e.g. the CNN's own check)"}
    rec = {**(check or given), "outside": bool(outside), "family_sigma_degC": term}
    out["family_check"] = rec
    out["outside_model"] = bool(outside)
    if not outside:
        if check is not None and not check.get("ran", False):
            why = unchecked_family_message(est["n_plateaux"], check.get("reason"))
            out["warnings"].append(warn(why))
        return out
    if term is None and card.calibration.get("source") == FAMILY_TUNED:
        msg = (
            "the camera is outside the families the network was trained on; the field head "
            "was fine-tuned on cameras of another family and its sigma measured on them "
            "(leave-one-camera-out): it holds if this camera is of that family"
        )
    elif term is None:
        msg = (
            "the camera is outside the families the network knows, and the field head has no "
            "out-of-family term for this plateau count: its sigma is the in-family one; "
            f"{FORWARD_ADVICE}"
        )
    else:
        before = out["sigma_degC"]
        out["sigma_degC"] = float(np.hypot(before, term))
        msg = (
            "the camera is outside the families the network knows (thermal-residual check): "
            f"sigma widened from {before:.2f} to {out['sigma_degC']:.2f} degC by the field "
            f"head's out-of-family term {term:.2f} degC; {FORWARD_ADVICE}"
        )
    out["warnings"].append(warn(msg))
    return out
