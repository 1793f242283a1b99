"""From per-frame focal offsets to the best-focus temperature (physics, not a polynomial).

Each frame ``i`` of field position ``f`` gives the network's estimate of its focal offset
from that field's EEF-optimal focus, ``delta_i`` (um).  Focus is thermal, a piston common to
the field, so within one camera::

    delta_i = s (T_i - T_f)          (s: um/degC, common; T_f: the field's optimal TRP1)

which is linear in ``(s, b_f = s T_f)``: a weighted least-squares problem, solved with
Huber re-weighting (robust to stray frames) and a Gaussian prior on ``s`` (docs/facts.md:
about 10 um/degC; the exact value and even the sign of a real camera are unknown, so the
prior is weak and only decisive with a single plateau, where ``s`` cannot be measured).

``T_BF`` is the temperature where the *field-averaged* EEF peaks (docs/facts.md),
``T_BF = argmax_T sum_f EEF_f(s (T - T_f))``.  Near the peak each field's EEF is close to a
parabola of similar curvature, so the default combination is the plain mean of the ``T_f``
(``combine="mean"``), which needs nothing from the optical model.  Measured on 6 random
cameras of the simulator with their exact per-field optima (n_sub 8, a diagnostic script
not shipped): mean of the ``T_f`` vs the exact definition 0.010 degC RMS; the argmax of the nominal
field-averaged template ``g`` (:class:`EEFTemplate`, ``combine="template"``) 0.053 degC, so
the template is kept as a diagnostic (``template_shift_degC``: what it would change) and as
the anchor of fine-tuning, not as the default.

The 1-sigma uncertainty is a bootstrap over the frames within each field position (the
field positions are the fixed set over which ``T_BF`` is defined), drawing ``s`` from its
prior when a single plateau leaves it unmeasured; it is half the central 68 % interval of the
replicates (robust to the heavy tail that ``1/s`` gives with one plateau).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from plato_cnn.robust import huber_weights
from plato_sim.errors import ParameterError, warn
from plato_sim.names import deprecated_alias
from plato_sim.optics.thermal import S_PRIOR_UM_PER_DEGC

__all__ = [
    "EEFTemplate",
    "FocusFit",
    "fit_thermal_model",
    "fit_bft",
    "thermal_residual_um",
    "make_eef_template",
]

DEFAULT_S_PRIOR_UM_PER_DEGC = S_PRIOR_UM_PER_DEGC  # plato_sim.optics.thermal
#: P(behind focus) between these bounds: the stars' side-of-focus votes are split
SIGN_BOUNDS = (0.2, 0.8)
#: how far beyond the sampled TRP1 range a T_BF is reported without a warning (degC)
OUT_OF_RANGE_DEGC = 5.0


@dataclass(frozen=True)
class EEFTemplate:
    """Field-averaged expected EEF against the offset from each field's own optimum.

    Attributes:
        delta_um: increasing grid of offsets (um).
        eef: EEF at those offsets.
    """

    delta_um: tuple[float, ...]
    eef: tuple[float, ...]

    def __call__(self, delta_um: np.ndarray) -> np.ndarray:
        """EEF at ``delta_um`` (linear interpolation, flat beyond the grid)."""
        return np.interp(delta_um, self.delta_um, self.eef)

    def to_json(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> EEFTemplate:
        """From ``{"delta_um": [...], "eef": [...]}`` (as stored in a model's description)."""
        return cls(tuple(float(v) for v in d["delta_um"]), tuple(float(v) for v in d["eef"]))

    @classmethod
    def from_json(cls, path: str | Path) -> EEFTemplate:
        """Read from JSON."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def make_eef_template(
    optics=None, half_range_um: float = 200.0, step_um: float = 10.0, n_fields: int = 12
) -> EEFTemplate:
    """Template ``g`` from the optical model: mean over fields of EEF(optimum + delta).

    Args:
        optics: :class:`plato_sim.optics.model.OpticalModel` (default the nominal design).
        half_range_um, step_um: the offset grid (um).
        n_fields: field positions averaged (a sub-set of the test table).
    """
    from plato_sim.optics.model import OpticalModel
    from plato_sim.scenes.fields import ground_test_fields
    from plato_sim.truth.bestfocus import expected_eef, field_best_focus_um

    optics = optics or OpticalModel()
    th, ph = ground_test_fields(n_fields)
    dz_opt, _ = field_best_focus_um(optics, th, ph, n_sub=3)
    grid = np.arange(-half_range_um, half_range_um + 0.5 * step_um, step_um)
    e = expected_eef(optics, th[:, None], ph[:, None], dz_opt[:, None] + grid[None, :], n_sub=3)
    return EEFTemplate(tuple(float(v) for v in grid), tuple(float(v) for v in e.mean(axis=0)))


@dataclass
class FocusFit:
    """Result of :func:`fit_bft` (temperatures in degC, s in um/degC).

    ``bft_degC`` is the best-focus temperature (``t_bf_degC``: deprecated read-only alias).
    """

    bft_degC: float
    sigma_degC: float
    s_um_per_degC: float
    s_sigma_um_per_degC: float
    s_measured: bool
    t_field_degC: np.ndarray
    field_ids: np.ndarray
    n_frames: int
    n_plateaux: int
    sign_ambiguous: bool
    p_behind_mean: float
    template_shift_degC: float
    warnings: list[str] = field(default_factory=list)
    #: how far the offsets depart from the fitted thermal model (:func:`thermal_residual_um`)
    thermal_residual_um: float = float("nan")

    t_bf_degC = deprecated_alias("bft_degC", "t_bf_degC")

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = asdict(self)
        d["t_field_degC"] = [float(v) for v in self.t_field_degC]
        d["field_ids"] = [int(v) for v in self.field_ids]
        return d


def thermal_residual_um(
    delta_um: np.ndarray,
    temperature_degC: np.ndarray,
    field_index: np.ndarray,
    plateau_id: np.ndarray,
    s_um_per_degC: float,
    t_field_degC: np.ndarray,
) -> float:
    """Departure of the offsets from the fitted thermal model ``delta = s (T - T_f)`` (um).

    The frames are grouped in cells (one field position on one plateau); the statistic is
    ``sqrt(max(0, mean_c(rbar_c^2 - var_c / n_c)))``: the RMS over cells of the mean residual,
    less its frame noise (``var_c``: the residuals' variance within the cell).  Frame noise
    averages out of it; what stays is a bias of the offsets that depends on the field and the
    temperature in a way the model's one ``s`` and one ``T_f`` per field cannot absorb: the
    network reading a camera unlike its training set (docs/cnn.md, "Uncertainty").  Cells with
    one frame are left out; NaN without any cell of two frames.  With one plateau every cell is
    absorbed by its field's ``T_f``: what remains is only the gap between the fit's weighted
    (robust) mean of a cell's frames and their plain mean, 0 unless some frames disagree with
    the others beyond their sigma.
    """
    d = np.asarray(delta_um, float)
    f = np.asarray(field_index, int)
    t_f = np.asarray(t_field_degC, float)[f]
    r = d - s_um_per_degC * (np.asarray(temperature_degC, float) - t_f)
    ok = np.isfinite(r)
    _, plate = np.unique(np.asarray(plateau_id)[ok], return_inverse=True)
    _, cell = np.unique(np.stack([f[ok], plate]), axis=1, return_inverse=True)
    cell = cell.ravel()
    r = r[ok]
    n = np.bincount(cell).astype(float)
    mean = np.bincount(cell, r) / n
    ss = np.bincount(cell, (r - mean[cell]) ** 2)
    two = n >= 2
    if not np.any(two):
        return float("nan")
    var_of_mean = ss[two] / (n[two] - 1) / n[two]
    return float(np.sqrt(max(0.0, float(np.mean(mean[two] ** 2 - var_of_mean)))))


def fit_thermal_model(
    delta_um: np.ndarray,
    sigma_um: np.ndarray,
    temperature_degC: np.ndarray,
    field_index: np.ndarray,
    n_fields: int,
    s_prior: tuple[float, float] = DEFAULT_S_PRIOR_UM_PER_DEGC,
    huber_k: float = 2.0,
    iterations: int = 8,
) -> tuple[float, float, np.ndarray]:
    """Robust weighted LS of ``delta = s T - b_f``; returns ``(s, s_sigma, T_f)``.

    ``field_index`` holds integers in ``[0, n_fields)``.  A field without frames gets NaN.
    """
    d = np.asarray(delta_um, float)
    sig = np.maximum(np.asarray(sigma_um, float), 1e-3)
    t = np.asarray(temperature_degC, float)
    f = np.asarray(field_index, int)
    t_ref = float(np.mean(t))
    tc = t - t_ref  # centring keeps the normal equations well conditioned
    s0, ss = s_prior
    w_h = np.ones_like(d)
    s = s0
    b = np.zeros(n_fields)
    cov_ss = ss**2
    for _ in range(iterations):
        w = w_h / sig**2
        # normal equations for (s, b_0..b_{F-1}); b_f enter with -1
        sw = np.bincount(f, w, n_fields)
        swt = np.bincount(f, w * tc, n_fields)
        swd = np.bincount(f, w * d, n_fields)
        a = np.zeros((n_fields + 1, n_fields + 1))
        r = np.zeros(n_fields + 1)
        a[0, 0] = np.sum(w * tc * tc) + 1.0 / ss**2
        r[0] = np.sum(w * tc * d) + s0 / ss**2
        a[0, 1:] = a[1:, 0] = -swt
        a[np.arange(1, n_fields + 1), np.arange(1, n_fields + 1)] = np.where(sw > 0, sw, 1.0)
        r[1:] = -swd
        sol = np.linalg.solve(a, r)
        s, b = sol[0], sol[1:]
        cov = np.linalg.inv(a)
        cov_ss = cov[0, 0]
        w_h = huber_weights((d - (s * tc - b[f])) / sig, huber_k)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_f = np.where(np.bincount(f, minlength=n_fields) > 0, t_ref + b / s, np.nan)
    return float(s), float(np.sqrt(cov_ss)), t_f


def _argmax_template(t_f: np.ndarray, s: float, template: EEFTemplate | None) -> float:
    t_f = t_f[np.isfinite(t_f)]
    if template is None:
        return float(np.mean(t_f))
    lo, hi = np.min(t_f) - 5.0, np.max(t_f) + 5.0
    grid = np.linspace(lo, hi, 401)
    score = template(s * (grid[:, None] - t_f[None, :])).mean(axis=1)
    k = int(np.argmax(score))
    if 0 < k < len(grid) - 1:  # parabola through the top three
        y0, y1, y2 = score[k - 1 : k + 2]
        den = y0 - 2 * y1 + y2
        if den < 0:
            return float(grid[k] + 0.5 * (grid[1] - grid[0]) * (y0 - y2) / den)
    return float(grid[k])


# Long because: the thermal-model fit, its bootstrap and its sanity checks share the
# per-field arrays; split, each step would take and return a dozen of them.
def fit_bft(
    delta_um: np.ndarray,
    sigma_um: np.ndarray,
    temperature_degC: np.ndarray,
    field_id: np.ndarray,
    p_behind: np.ndarray | None = None,
    template: EEFTemplate | None = None,
    s_prior: tuple[float, float] = DEFAULT_S_PRIOR_UM_PER_DEGC,
    plateau_id: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
    combine: str = "mean",
) -> FocusFit:
    """Best-focus temperature from per-frame offsets (see the module docstring).

    Args:
        delta_um, sigma_um: per-frame offset from the field's optimum and its 1-sigma (um).
        temperature_degC: per-frame TRP1 temperature.
        field_id: per-frame field-position label (any hashable integers).
        p_behind: per-frame probability of being behind the field's optimum (sign head).
        template: EEF template (None: symmetric curve); with ``combine="mean"`` it only
            gives the diagnostic ``template_shift_degC``.
        s_prior: (mean, sigma) of the thermal sensitivity prior (um/degC).
        plateau_id: per-frame plateau label (default: temperatures rounded to 0.5 degC).
        n_boot: bootstrap replicates for the uncertainty.
        seed: bootstrap seed.
        combine: ``"mean"`` (T_BF = mean of the T_f) or ``"template"`` (argmax of the
            template's field average).
    """
    if combine not in ("mean", "template"):
        raise ParameterError(f"combine={combine!r}: 'mean' or 'template'")
    combiner = template if combine == "template" else None
    d = np.asarray(delta_um, float)
    if d.size == 0:
        raise ParameterError("no frames to fit")
    sig = np.asarray(sigma_um, float)
    t = np.asarray(temperature_degC, float)
    ok = np.isfinite(d) & np.isfinite(sig) & np.isfinite(t)
    warnings: list[str] = []
    if not np.all(ok):
        warnings.append(warn(f"{int((~ok).sum())} frames with non-finite predictions ignored"))
    ids, f = np.unique(np.asarray(field_id)[ok], return_inverse=True)
    d, sig, t = d[ok], sig[ok], t[ok]
    plate = np.round(t * 2) / 2 if plateau_id is None else np.asarray(plateau_id)[ok]
    n_plat = len(np.unique(plate))
    s_measured = n_plat >= 2
    if not s_measured:
        warnings.append(warn("one plateau: s held at its prior, its uncertainty propagated"))
    nf = len(ids)
    s, s_sig, t_f = fit_thermal_model(d, sig, t, f, nf, s_prior)
    t_bf = _argmax_template(t_f, s, combiner)
    shift = _argmax_template(t_f, s, template) - float(np.nanmean(t_f))

    rng = np.random.default_rng(seed)
    boots = []
    frames_of = [np.flatnonzero(f == k) for k in range(nf)]
    for _ in range(n_boot):
        # frames are resampled within each field; the fields themselves are the fixed set
        # over which T_BF is defined, so resampling them would count their spread as error
        idx = np.concatenate([rng.choice(fr, len(fr)) for fr in frames_of])
        new_f = f[idx]
        prior = s_prior
        if not s_measured:
            prior = (float(rng.normal(s_prior[0], s_prior[1])), s_prior[1] * 1e-3)
        sb, _, tfb = fit_thermal_model(d[idx], sig[idx], t[idx], new_f, nf, prior)
        boots.append(_argmax_template(tfb, sb, combiner))
    # half the central 68 % interval, not the standard deviation: with one plateau the
    # replicates draw s from its prior, and the few draws near s = 0 send T_f to infinity
    sigma = float(np.diff(np.percentile(boots, [15.87, 84.13]))[0] / 2) if n_boot > 1 else np.nan

    p_mean = float(np.mean(np.asarray(p_behind, float)[ok])) if p_behind is not None else 0.5
    ambiguous = (
        (not s_measured) and p_behind is not None and SIGN_BOUNDS[0] < p_mean < SIGN_BOUNDS[1]
    )
    # Sanity checks, not corrections: on cameras unlike its training set a network can see
    # almost no change of focus with temperature, and T_f = T - delta/s then runs away
    # (domain-shift benchmark: errors of 30-140 degC before fine-tuning).
    if s_measured and not (0.25 * s_prior[0] <= abs(s) <= 4.0 * s_prior[0]):
        warnings.append(
            warn(
                f"fitted s = {s:.2f} um/degC is implausible (prior {s_prior[0]:g} +- "
                f"{s_prior[1]:g}): the network's offsets do not follow the temperature as focus "
                "should (model mismatch?); fine-tune on these campaigns or use --method eef"
            )
        )
    t_lo, t_hi = float(np.min(t)), float(np.max(t))
    if not t_lo - OUT_OF_RANGE_DEGC <= t_bf <= t_hi + OUT_OF_RANGE_DEGC:
        warnings.append(
            warn(
                f"T_BF = {t_bf:.1f} degC lies more than {OUT_OF_RANGE_DEGC:g} degC outside the "
                f"sampled range [{t_lo:.1f}, {t_hi:.1f}] degC: an extrapolation, not a measurement"
            )
        )
    if ambiguous:
        warnings.append(
            warn(f"side of focus undecided from one plateau (mean P(behind) = {p_mean:.2f})")
        )
    return FocusFit(
        bft_degC=t_bf,
        sigma_degC=sigma,
        s_um_per_degC=s,
        s_sigma_um_per_degC=s_sig,
        s_measured=s_measured,
        t_field_degC=t_f,
        field_ids=ids,
        n_frames=int(d.size),
        n_plateaux=int(n_plat),
        sign_ambiguous=bool(ambiguous),
        p_behind_mean=p_mean,
        template_shift_degC=float(shift),
        warnings=warnings,
        thermal_residual_um=thermal_residual_um(d, t, f, plate, s, t_f),
    )
