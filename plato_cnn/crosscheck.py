"""A second opinion from the images alone: the improved classical estimate against a model's.

The CNN and the forward fit lean on an optical model (the CNN on the population it was
trained in, the forward fit on its Zernike basis); the improved classical estimator
(:func:`plato_cnn.classical.improved_bft`) leans only on the shape of the EEF curve. On cameras
unlike the simulator the model-based estimates can be wrong by far more than their sigma,
while the classical one stays near the truth with 5 plateaux (README, "In family and out of
family"). So when the two disagree by more than :data:`DISAGREE_SIGMAS` combined sigmas, the
camera is outside what the model knows: the report says so (``outside_model: true`` and a
warning) and the sigma is widened to cover the disagreement, never left quietly narrow.

The check needs the 3 plateaux the classical fit needs; with fewer it is reported as not run.
"""

from __future__ import annotations

import math

from plato_cnn.classical import improved_bft
from plato_cnn.reader import CampaignFrames
from plato_sim.errors import InsufficientPlateaux, warn

__all__ = ["DISAGREE_SIGMAS", "cross_check", "cross_check_forward"]

#: disagreement (in combined sigmas) beyond which a model-based estimate is flagged: two
#: standard normal estimates differ by more than 3 combined sigmas 0.3 % of the time
DISAGREE_SIGMAS = 3.0


def cross_check(frames: CampaignFrames, result: dict, seed: int = 0, n_boot: int = 100) -> dict:
    """Compare ``result`` (a method's report part: ``bft_degC``, ``sigma_degC``) with the
    improved classical estimate on the same frames; return the updated result.

    Adds ``cross_check`` (the classical estimate, the disagreement in combined sigmas, whether
    it ran) and, when they disagree, sets ``outside_model``, widens ``sigma_degC`` to
    ``hypot(sigma, |difference|)`` and appends a warning.
    """
    out = dict(result)
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
    the disagreement) and, when they disagree beyond :data:`DISAGREE_SIGMAS`, the same
    flag, widening and warning as :func:`cross_check`.

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
    return _compare(out, check, "the forward fit", fw["bft_degC"], fw["sigma_degC"])


def _compare(out: dict, check: dict, what: str, t_ref: float, s_ref: float) -> dict:
    """Disagreement of ``out`` with a reference estimate (``check`` filled in place); beyond
    :data:`DISAGREE_SIGMAS` combined sigmas: flagged, sigma widened, a warning."""
    t, s = float(out["bft_degC"]), float(out["sigma_degC"])
    diff = t - t_ref
    combined = math.hypot(s, s_ref) if math.isfinite(s_ref) else s
    n_sig = abs(diff) / combined if combined > 0 else math.inf
    check.update(difference_degC=diff, disagreement_sigmas=n_sig, threshold_sigmas=DISAGREE_SIGMAS)
    if n_sig > DISAGREE_SIGMAS:
        widened = math.hypot(s, abs(diff))
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
