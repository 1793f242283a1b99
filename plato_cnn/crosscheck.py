"""A second opinion from the images alone: the improved classical estimate against a model's.

The CNN and the forward fit lean on an optical model (the CNN on the population it was
trained in, the forward fit on its Zernike basis); the improved classical estimator
(:func:`plato_cnn.classical.improved_bft`) leans only on the shape of the EEF curve. On cameras
unlike the simulator the model-based estimates can be wrong by far more than their sigma,
while the classical one stays near the truth with 5 plateaux (README, "In family and out of
family"). So when the two disagree by more than :data:`DISAGREE_SIGMAS` combined sigmas, the
camera is outside what the model knows: the report says so (``outside_model: true`` and a
warning) and the sigma is widened to cover the disagreement, never left quietly narrow.

The forward fit as the reference (:func:`cross_check_forward`) is stricter with an estimate
that its own check already placed outside its model (the CNN's thermal-residual check): that
estimate's sigma is a widening extrapolated from other families, no longer a calibrated one,
while the forward fit's sigma is calibrated within and outside its basis (docs/forward.md).
A difference beyond :data:`DISAGREE_SIGMAS_FLAGGED` (one) combined sigma then widens it.
On the calibration families (``benchmarks/crosscheck_rule.py``: 12 design and 12 mild
high-order cameras) this raised the coverage of the mild high-order cameras with 5 / 3 / 2
plateaux from 75 / 58 / 42 % to 100 / 83 / 67 % and left the design cameras' unchanged.

The check needs :data:`MIN_PLATEAUX` plateaux; with fewer it is reported as not run.  The
classical fit itself runs from 3, but with 3 it is biased by ~1 degC (README, "The CNN
estimate": 1.14 degC RMS, bias +1.03, 50 cameras): before its sigma held a shape term it
flagged good estimates and widened their sigma for nothing (out-of-family bench: 3 of 4
in-family CNN estimates flagged with 3 plateaux); with the calibrated term
(docs/classical_bft.md) its sigma, ~1 degC, is too wide to check anything.
"""

from __future__ import annotations

import math

import numpy as np

from plato_cnn.classical import improved_bft
from plato_cnn.reader import CampaignFrames
from plato_sim.errors import InsufficientPlateaux, warn

__all__ = [
    "DISAGREE_SIGMAS",
    "DISAGREE_SIGMAS_FLAGGED",
    "MIN_PLATEAUX",
    "cross_check",
    "cross_check_forward",
    "disagreement",
    "forward_threshold",
]

#: disagreement (in combined sigmas) beyond which a model-based estimate is flagged: two
#: standard normal estimates differ by more than 3 combined sigmas 0.3 % of the time
DISAGREE_SIGMAS = 3.0
#: the same against the forward fit for an estimate already flagged outside its model
#: (module docstring): its sigma is no longer calibrated, one combined sigma suffices
DISAGREE_SIGMAS_FLAGGED = 1.0
#: Plateaux the classical cross-check needs: with 5 the improved classical fit covers 88 % of
#: cameras with its sigma, with 3 it is biased (module docstring); a cubic needs 4.
MIN_PLATEAUX = 4


def cross_check(frames: CampaignFrames, result: dict, seed: int = 0, n_boot: int = 100) -> dict:
    """Compare ``result`` (a method's report part: ``bft_degC``, ``sigma_degC``) with the
    improved classical estimate on the same frames; return the updated result.

    Adds ``cross_check`` (the classical estimate, the disagreement in combined sigmas, whether
    it ran) and, when they disagree, sets ``outside_model``, widens ``sigma_degC`` to
    ``hypot(sigma, |difference|)`` and appends a warning.
    """
    out = dict(result)
    n_pl = len(np.unique(frames.obsid[frames.usable]))
    if n_pl < MIN_PLATEAUX:
        out["cross_check"] = {
            "ran": False,
            "reason": f"{n_pl} plateaux: the improved classical fit is biased with fewer than "
            f"{MIN_PLATEAUX}",
        }
        return out
    try:
        cl = improved_bft(frames, "gauss", n_boot=n_boot, seed=seed)
    except InsufficientPlateaux as exc:
        out["cross_check"] = {"ran": False, "reason": str(exc)}
        return out
    check = {
        "ran": True,
        "classical_bft_degC": cl.bft_degC,
        "classical_sigma_degC": cl.sigma_degC,
    }
    out["cross_check"] = check
    return _compare(out, check, "the improved classical one", cl.bft_degC, cl.sigma_degC)


def cross_check_forward(frames: CampaignFrames, result: dict, seed: int = 0) -> dict:
    """Compare a CNN ``result`` with the forward method's fit of the same frames (minutes);
    return the updated result, with ``cross_check_forward`` (the fit's T_BF, sigma and chi^2,
    the disagreement) and, when they disagree beyond :data:`DISAGREE_SIGMAS` (or
    :data:`DISAGREE_SIGMAS_FLAGGED` when the CNN's thermal-residual check flagged the
    estimate: ``result["thermal_residual"]["outside"]``), the same flag, widening and warning
    as :func:`cross_check`.

    The forward fit describes each camera's own optics (docs/forward.md), so it is the
    reference that sees a camera unlike the network's training set, with 1 or 2 plateaux too.
    """
    from plato_cnn.forward import forward_bft

    out = dict(result)
    fw = forward_bft(frames.select(frames.usable), seed=seed)
    check = {
        "ran": True,
        "forward_bft_degC": fw["bft_degC"],
        "forward_sigma_degC": fw["sigma_degC"],
        "forward_chi2_reduced": fw["chi2"]["reduced"],
        "forward_outside_model": fw["outside_model"],
    }
    out["cross_check_forward"] = check
    # the estimate's own check, not another cross-check: that is the case measured
    residual_flag = bool((out.get("thermal_residual") or {}).get("outside", False))
    threshold = forward_threshold(residual_flag)
    return _compare(out, check, "the forward fit", fw["bft_degC"], fw["sigma_degC"], threshold)


def forward_threshold(already_outside: bool) -> float:
    """Disagreement threshold (combined sigmas) against the forward fit: one for an estimate
    its own thermal-residual check flagged outside its model, else :data:`DISAGREE_SIGMAS`."""
    return DISAGREE_SIGMAS_FLAGGED if already_outside else DISAGREE_SIGMAS


def disagreement(
    t_degC: float,
    sigma_degC: float,
    t_ref_degC: float,
    sigma_ref_degC: float,
    threshold_sigmas: float = DISAGREE_SIGMAS,
) -> tuple[float, float, float | None]:
    """``(difference, difference in combined sigmas, widened sigma)`` of an estimate against a
    reference (degC); the widened sigma, ``hypot(sigma, |difference|)``, is None when they
    agree within ``threshold_sigmas`` (an infinite reference sigma is left out of the
    combination)."""
    diff = t_degC - t_ref_degC
    combined = (
        math.hypot(sigma_degC, sigma_ref_degC) if math.isfinite(sigma_ref_degC) else sigma_degC
    )
    n_sig = abs(diff) / combined if combined > 0 else math.inf
    widened = math.hypot(sigma_degC, abs(diff)) if n_sig > threshold_sigmas else None
    return diff, n_sig, widened


def _compare(
    out: dict,
    check: dict,
    what: str,
    t_ref: float,
    s_ref: float,
    threshold: float = DISAGREE_SIGMAS,
) -> dict:
    """Disagreement of ``out`` with a reference estimate (``check`` filled in place); beyond
    ``threshold`` combined sigmas: flagged, sigma widened, a warning."""
    t, s = float(out["bft_degC"]), float(out["sigma_degC"])
    diff, n_sig, widened = disagreement(t, s, t_ref, s_ref, threshold)
    check.update(difference_degC=diff, disagreement_sigmas=n_sig, threshold_sigmas=threshold)
    if widened is not None:
        check["sigma_before_degC"] = s
        out["sigma_degC"] = widened
        out["outside_model"] = True
        out["warnings"] = list(out.get("warnings", [])) + [
            warn(
                f"outside what the model knows: this estimate and {what} "
                f"({t_ref:.2f} +- {s_ref:.2f} degC) differ by {diff:+.2f} degC, "
                f"{n_sig:.1f} combined sigmas; sigma widened from {s:.2f} to {widened:.2f} degC"
            )
        ]
    else:
        out.setdefault("outside_model", False)
    return out
