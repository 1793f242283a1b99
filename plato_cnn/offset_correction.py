"""Per-camera correction of the network's focal offsets, measured on an earlier campaign.

A network trained on a simulated population errs on a real camera by a bias that depends on
the field position and on the focus (the camera's own aberrations, which the population did
not hold) and that does not average out over frames (docs/cnn.md, section 5).  Once one
campaign of the camera has been fitted by the forward method with ``field_focus``, every frame
of it has a physics label (:func:`plato_cnn.forward.physics_labels`), and the network's error
is measured per field position and plateau: ``c_f(T_p)``, the mean over the (field, plateau)
group of network minus label (um).  On the same camera's later campaign (the same test
house's field table) each frame's offset is corrected by its field's ``c_f`` interpolated
linearly in temperature between the plateaux of the earlier campaign (held constant beyond
them); a field position not in the table gets the mean over fields.  No shape is assumed for
the network's error against focus: out of family it is far from a line (per field, a
straight line in the label left 17-30 um RMS of the group means of the shipped model on
nodal-family cameras).  The correction holds while the camera's focus moves little between
campaigns compared with the plateau spacing (its bias changes with focus); the re-check
(:meth:`OffsetCorrection.recheck`) takes each frame's bias at the earlier campaign's
temperature of the same focus instead.

The correction belongs to one model and one camera: it records the model card's digest and
refuses another model; a campaign of another camera gets a warning.  Saved as JSON
(:meth:`OffsetCorrection.save`, :func:`load_offset_correction`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from plato_cnn.forward import (
    field_distance_deg,
    solve_thermal,
    thermal_shift_um,
    thermal_slope_um_per_degC,
)
from plato_sim.errors import DataError, ParameterError

__all__ = [
    "OffsetCorrection",
    "RECHECK_SYSTEMATIC",
    "RECHECK_SYSTEMATIC_TRP1",
    "RECHECK_SENSITIVITY_OUTSIDE",
    "SENSITIVITY_FLOOR",
    "interpolation_remainder",
    "nearest_fixed_point",
    "recheck_sigma_degC",
    "sensitivity_scale",
    "fit_offset_correction",
    "measure_offset_correction",
    "load_offset_correction",
]

log = logging.getLogger(__name__)

FORMAT = "plato-focus-offset-correction/2"
#: Field positions closer than this (deg, |d theta| + |d phi|) are the same position.
SAME_FIELD_DEG = 1e-3
#: The re-check's focus-indexed correction: the focus change is sought within this window
#: (um) around the TRP1-indexed one, scanned in ``RECHECK_SCAN`` steps, and solved to
#: ``RECHECK_TOL_UM`` (the standard plateaux are 5 degC ~ 50 um apart; T_BF changes of a few
#: degC are 10-30 um).
RECHECK_WINDOW_UM = 30.0
RECHECK_SCAN = 60
RECHECK_TOL_UM = 1e-3
#: Central-difference step (um) of the re-check's sensitivity to the focus change.
RECHECK_SENSITIVITY_STEP_UM = 1.0
#: A sigma divided by the network's sensitivity ``k`` (:func:`sensitivity_scale`) is divided
#: by ``max(|k|, SENSITIVITY_FLOOR)``: below it the frames no longer measure the focus and
#: sigma stops at 10 times its value at ``k = 1`` (the re-check's and the ground-corrected
#: in-orbit check's, :mod:`plato_cnn.ground_calibration`).
SENSITIVITY_FLOOR = 0.1
#: A re-check whose sensitivity lies below this is outside what the model knows (None: no
#: such flag): 0.9 times the smallest ``k`` of the in-family calibration set (design family,
#: random test designs, seed 0, 8 cameras, every later plateau count: least 0.780, median
#: 0.98-1.01; ``python -m benchmarks.recheck --family design --seed 0 --cameras 8
#: --skip-finetune``), a rule set before it was measured.  On the two out-of-family
#: calibration sets it flags 12 of 104 re-checks (7 highorder-mild ones with 1 plateau), and
#: their sigma, divided by ``k``, covers 11 of them: no term is added for the flag.
RECHECK_SENSITIVITY_OUTSIDE: float | None = 0.702
#: The re-check's systematic sigma by the later campaign's plateau count (the largest count
#: not above it): ``(constant degC, relative, spread)``, the term being
#: ``hypot(constant, relative * |T_BF change|, spread * spread_um / |s|)`` on the corrected
#: mean, divided by the network's sensitivity with the fields' and the interpolation terms
#: (``spread_um / |s|``: the correction's RMS in degC, how much of the network's bias the
#: first campaign had to remove); calibrated on cameras of the calibration families, never
#: the evaluation one (docs/cnn.md, "Re-check of a known camera"): 16 highorder-mild + 10
#: highorder cameras (seed 0) with later campaigns moved by up to 1 degC, ``python -m
#: benchmarks.recheck --calibrate-from HM.json HO.json`` over the runs ``--family
#: highorder-mild --seed 0 --cameras 16 --skip-finetune`` and ``--family highorder --seed 0
#: --cameras 10 --skip-finetune``.  With the sensitivity and the interpolation error in the
#: sigma, its statistical terms alone cover 81 / 81 / 73 / 73 % of the 26 cameras with 5 / 3
#: / 2 / 1 plateaux: nothing is needed beyond them, for every form (calibrated on one set,
#: the constant covers 70 / 88, 70 / 88, 70 / 75 and 50 / 88 % of the other both ways).
#: Before them the table held 0.042 / 0.033 degC (constant) with 5 / 3 plateaux and 0.064 /
#: 0.082 of the correction's RMS with 2 / 1, and cross-calibrated it covered 30 / 100, 50 /
#: 94, 70 / 69 and 60 / 69 %.
RECHECK_SYSTEMATIC: dict[int, tuple[float, float, float]] = {
    5: (0.0, 0.0, 0.0),
    3: (0.0, 0.0, 0.0),
    2: (0.0, 0.0, 0.0),
    1: (0.0, 0.0, 0.0),
}
#: The same for the TRP1-indexed re-check (``index="trp1"``, whose sigma has no sensitivity
#: and whose frames sit at the table's plateaux), from the same runs and by the same rule:
#: the relative form with 2 plateaux (70 / 62 %), the constant over both sets with 5, 3 and 1
#: (no form covers 60-80 % both ways: the constant 30 / 94, 60 / 94 and 10 / 88 %).
RECHECK_SYSTEMATIC_TRP1: dict[int, tuple[float, float, float]] = {
    5: (0.0422, 0.0, 0.0),
    3: (0.0274, 0.0, 0.0),
    2: (0.0, 0.1906, 0.0),
    1: (0.1507, 0.0, 0.0),
}


@dataclass(frozen=True)
class OffsetCorrection:
    """Per field position ``(theta_deg, phi_deg)``: the network's mean offset minus the physics
    label ``offset_um[f][p]`` (um; NaN where the field has no frame on the plateau) at the
    earlier campaign's plateau temperatures ``plateau_degC`` (TRP1, ascending); the mean over
    fields ``mean_offset_um[p]``; the RMS of the offsets ``spread_um`` (how much is
    corrected) and of their standard errors ``noise_um`` (what the correction adds); the
    model card's ``model_card_sha256``; the camera; and, when measured with
    :func:`measure_offset_correction`, the thermal sensitivity ``s_prior_um_per_degC``
    ``(mean, sigma)`` (um/degC) of the corrected network's fit of that campaign, the s prior
    of the camera's later 1-plateau fits, and ``first``, what the forward fit measured on that
    campaign for :meth:`recheck`: its T_BF and sigma (degC), its thermal model and each field's
    best focus (um)."""

    theta_deg: tuple[float, ...]
    phi_deg: tuple[float, ...]
    plateau_degC: tuple[float, ...]
    offset_um: tuple[tuple[float, ...], ...]
    mean_offset_um: tuple[float, ...]
    spread_um: float
    noise_um: float
    model_card_sha256: str
    camera: str
    s_prior_um_per_degC: tuple[float, float] | None = None
    first: dict | None = None

    def apply(self, frames, mu_um: np.ndarray, model_card_sha256: str) -> np.ndarray:
        """The offsets ``mu_um`` of ``frames`` corrected (um).

        Raises:
            ParameterError: the predictions come from another model than the correction's.
        """
        if model_card_sha256 != self.model_card_sha256:
            raise ParameterError(
                "the offset correction was measured with another model (card "
                f"{self.model_card_sha256[:12]}, not {model_card_sha256[:12]})"
            )
        if frames.camera != self.camera:
            log.warning(
                "offset correction of camera %s applied to a campaign of camera %s",
                self.camera, frames.camera,
            )  # fmt: skip
        return np.asarray(mu_um, float) - self.per_frame(frames)

    def per_frame(self, frames, temperature_degC: np.ndarray | None = None) -> np.ndarray:
        """Each frame's correction (um): its field's, or the mean over fields, at its TRP1
        (or at ``temperature_degC``, one per frame: the earlier campaign's temperature of
        the same focus, :meth:`recheck`)."""
        t = np.asarray(
            frames.temperature_degC if temperature_degC is None else temperature_degC, float
        )
        out = np.interp(t, np.asarray(self.plateau_degC), np.asarray(self.mean_offset_um))
        if not self.theta_deg:
            return out
        hit = self._read_table(frames, t, lambda x, y, q: np.interp(q, x, y), out)
        if not hit.all():
            log.info("%d of %d frames at field positions the correction does not hold: mean "
                     "over fields", int((~hit).sum()), len(t))  # fmt: skip
        return out

    def recheck(self, frames, mu_um: np.ndarray, index: str = "focus") -> dict:
        """T_BF of the camera's later campaign from the focus change the corrected network
        sees, on the earlier campaign's physics (:attr:`first`).

        Each frame's corrected offset minus the offset the earlier fit predicts for it (its
        field's best focus and the thermal model at its TRP1) is the change ``delta`` of the
        thermal focus between the campaigns; ``delta`` is the mean over field positions of
        their mean.  The optics did not change, so the later T_BF is where the earlier
        thermal curve plus ``delta`` reaches the focus the earlier T_BF had.  Frames at field
        positions the earlier fit does not hold are left out.

        The network's bias depends on the stamp's focus, not on the TRP1 reading: with
        ``index="focus"`` (default) a later frame at ``T`` is corrected by the earlier
        campaign's bias at the temperature ``T'`` where the earlier thermal focus equals the
        frame's (``dz(T') = dz(T) + delta``), ``delta`` being the solution of that
        self-consistency nearest the TRP1-indexed one (:meth:`_focus_change`);
        ``index="trp1"`` corrects at ``T`` itself (exact only when the focus did not move).

        Sigma (:func:`recheck_sigma_degC`): the per-field means' scatter over sqrt(fields),
        the table's interpolation error (:func:`interpolation_remainder` at the frames'
        ``T'``, common to every field) and the systematic term (:data:`RECHECK_SYSTEMATIC`),
        all three divided by the sensitivity ``k = 1 - F'(delta)`` (``F``: the mean over
        fields against the focus change at which frames are corrected; an error ``e`` of
        ``F`` moves ``delta`` by ``e / k``; 1 for the TRP1 index), and the earlier T_BF's
        sigma, in quadrature.  Below :data:`RECHECK_SENSITIVITY_OUTSIDE` the camera is
        outside what the model knows (``outside_model``; ``cnn_bft`` warns).

        Args:
            frames: the later campaign's frames.
            mu_um: the network's offsets of ``frames`` (um), uncorrected.
            index: ``"focus"`` or ``"trp1"``, see above.

        Returns:
            ``bft_degC``, ``sigma_degC``, ``delta_um``, ``sigma_delta_um`` (the fields' term,
            divided by ``k``), ``fields``, ``frames``, ``plateaux``, ``index``,
            ``solutions`` (self-consistent focus changes found; 0: none, the TRP1-indexed
            value kept), ``sensitivity`` (``k``), ``sensitivity_outside`` (the threshold
            applied; None: none), ``outside_model``, and the sigma's terms
            before the division by ``k``: ``sigma_fields_degC``, ``interp_degC``,
            ``spread_degC`` (the correction's RMS over ``|s|``), ``systematic_degC`` (None
            for a plateau count the calibration lacks); and ``sigma_first_degC``.

        Raises:
            DataError: no :attr:`first` block, or no frame at a field the earlier fit holds.
            ParameterError: ``index`` not one of the two.
        """
        if index not in ("focus", "trp1"):
            raise ParameterError(f"index={index!r}: 'focus' or 'trp1'")
        if not self.first:
            raise DataError("this offset correction holds no forward fit of the earlier campaign")
        mu = np.asarray(mu_um, float)
        k, hit = self._table_fields(frames)
        hit &= np.isfinite(mu)
        if not hit.any():
            raise DataError("no frame at a field position of the earlier campaign")
        per_field, roots, sens, interp_um = self._focus_change(frames, mu, k, hit, index)
        delta = float(per_field.mean())
        spread = float(per_field.std(ddof=1)) if len(per_field) > 1 else float("inf")
        sig_delta = spread / np.sqrt(len(per_field))
        # the focus the earlier T_BF had, reached now where dz(T) = dz(T_BF) - delta
        target = float(thermal_shift_um(self.first, self.first["bft_degC"])) - delta
        t = solve_thermal(self.first["thermal"], target, self.first["bft_degC"])
        slope = abs(thermal_slope_um_per_degC(self.first, t))
        n_pl = int(len(np.unique(np.asarray(frames.obsid)[hit])))
        change = t - self.first["bft_degC"]
        spread_degC = float(self.spread_um / slope)
        sys_degC = recheck_systematic_degC(n_pl, change, spread_degC, index)
        scale = sensitivity_scale(sens, index)
        sigma = recheck_sigma_degC(sig_delta / slope, self.first["sigma_degC"], n_pl, change,
                                   spread_degC, interp_um / slope, scale, index)  # fmt: skip
        limit = RECHECK_SENSITIVITY_OUTSIDE if index == "focus" else None
        return dict(bft_degC=t, sigma_degC=sigma, delta_um=delta,
                    sigma_delta_um=float(sig_delta / scale), fields=int(len(per_field)),
                    frames=int(hit.sum()), plateaux=n_pl, index=index, solutions=roots,
                    sensitivity=sens, sensitivity_outside=limit,
                    outside_model=bool(limit is not None and sens < limit),
                    sigma_fields_degC=float(sig_delta / slope), interp_degC=interp_um / slope,
                    sigma_first_degC=float(self.first["sigma_degC"]), spread_degC=spread_degC,
                    systematic_degC=sys_degC)  # fmt: skip

    def _focus_change(self, frames, mu: np.ndarray, k: np.ndarray, hit: np.ndarray, index: str):
        """Per field of ``k[hit]``: the mean of corrected offset minus the earlier fit's
        prediction (um) at the focus change ``delta`` that this mean reproduces (their mean
        over fields); the number of such solutions in the search window; the sensitivity
        ``k = 1 - F'(delta)`` there (1 for the TRP1 index); and the table's interpolation
        error (um) at the frames' correction temperatures, the mean over fields of each
        field's frames' mean.

        ``delta = F(delta)`` (``F``: the field mean with each frame corrected at the
        temperature of focus ``dz(T) + delta``) is solved by a scan of
        ``delta_trp1 +- RECHECK_WINDOW_UM`` (``delta_trp1 = F(0)``, the TRP1-indexed value)
        and Brent's method in each sign change; the solution nearest ``delta_trp1`` is kept
        (a plain fixed-point iteration oscillates where the bias falls with focus almost as
        fast as focus rises).  None in the window: the TRP1-indexed value, with a warning."""
        th = self.first["thermal"]
        t_frame = np.asarray(frames.temperature_degC, float)
        dz = thermal_shift_um(self.first, t_frame)  # the earlier fit's thermal focus (um)
        predicted = dz - np.asarray(self.first["dz_best_um"])[k]
        kf = k[hit]
        counts = np.bincount(kf)

        def t_at(delta: float) -> np.ndarray:
            return t_frame if delta == 0.0 else solve_thermal(th, dz + delta, t_frame)

        def field_means(values: np.ndarray) -> np.ndarray:
            return (np.bincount(kf, values[hit]) / np.maximum(counts, 1))[counts > 0]

        def per_field(delta: float) -> np.ndarray:
            return field_means(mu - self.per_frame(frames, t_at(delta)) - predicted)

        def interp_um(delta: float) -> float:
            return float(field_means(self.interpolation_error(frames, t_at(delta))).mean())

        at_trp1 = per_field(0.0)
        if index == "trp1":
            return at_trp1, 1, 1.0, interp_um(0.0)
        d0 = float(at_trp1.mean())
        best, n_roots = nearest_fixed_point(
            lambda x: float(per_field(x).mean()),
            d0,
            RECHECK_WINDOW_UM,
            RECHECK_SCAN,
            RECHECK_TOL_UM,
        )
        if best is None:
            log.warning("re-check: no focus change within %.0f um of the TRP1-indexed %.2f um "
                        "reproduces itself; the TRP1-indexed value is kept", RECHECK_WINDOW_UM,
                        d0)  # fmt: skip
            best, values = d0, at_trp1
        else:
            values = per_field(best)
        h = RECHECK_SENSITIVITY_STEP_UM
        slope = (per_field(best + h).mean() - per_field(best - h).mean()) / (2.0 * h)
        return values, n_roots, float(1.0 - slope), interp_um(best)

    def interpolation_error(self, frames, temperature_degC: np.ndarray | None = None):
        """Each frame's estimated error (um, >= 0) of :meth:`per_frame`'s linear reading of
        its field's table between plateaux (:func:`interpolation_remainder`; 0 for frames at
        field positions the table does not hold, which take the mean over fields)."""
        t = np.asarray(
            frames.temperature_degC if temperature_degC is None else temperature_degC, float
        )
        out = np.zeros(len(t))
        if self.theta_deg:
            self._read_table(frames, t, interpolation_remainder, out)
        return out

    def _table_fields(self, frames) -> tuple[np.ndarray, np.ndarray]:
        """Each frame's nearest field position of the table and whether it is that one."""
        d = field_distance_deg(self.theta_deg, self.phi_deg, frames.field_theta_deg,
                               frames.field_phi_deg)  # fmt: skip
        k = np.argmin(d, axis=1)
        return k, d[np.arange(len(k)), k] < SAME_FIELD_DEG

    def _read_table(self, frames, t: np.ndarray, reader, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (in place) for the frames at a field position of the table with
        ``reader(plateaux, their field's finite entries, t of those frames)``; return the mask
        of those frames."""
        tp = np.asarray(self.plateau_degC)
        k, hit = self._table_fields(frames)
        table = np.asarray(self.offset_um, float)
        for f in np.unique(k[hit]):
            sel = hit & (k == f)
            ok = np.isfinite(table[f])
            out[sel] = reader(tp[ok], table[f][ok], t[sel])
        return hit

    def save(self, path: str | Path) -> Path:
        """Write the correction as JSON (atomically; NaN as null)."""
        from plato_sim.io.atomic import atomic_write_text

        d = asdict(self)
        d["offset_um"] = [[v if np.isfinite(v) else None for v in row] for row in d["offset_um"]]
        path = Path(path)
        atomic_write_text(path, json.dumps({"format": FORMAT, **d}, indent=1))
        return path


def interpolation_remainder(x: np.ndarray, y: np.ndarray, xq) -> np.ndarray:
    """Estimated error (>= 0, units of ``y``) of ``np.interp(xq, x, y)`` (``x`` ascending):
    the linear-interpolation remainder ``|f''/2 (xq - x_j)(xq - x_j+1)|`` with ``|f''/2|``
    the largest second divided difference ``|f[x_a, x_a+1, x_a+2]|`` of the node triples
    holding the interval ``[x_j, x_j+1]``; 0 beyond the end nodes (where ``np.interp`` holds
    the end value) and with fewer than 3 nodes.  An estimate: a table measured at few nodes
    shows its curvature only there."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xq = np.atleast_1d(np.asarray(xq, float))
    out = np.zeros(xq.shape)
    if len(x) < 3:
        return out
    d1 = np.diff(y) / np.diff(x)
    d2 = np.abs(np.diff(d1) / (x[2:] - x[:-2]))  # triple a = (a, a+1, a+2)
    inside = (xq > x[0]) & (xq < x[-1])
    j = np.clip(np.searchsorted(x, xq[inside]) - 1, 0, len(x) - 2)
    left = np.where(j - 1 >= 0, d2[np.clip(j - 1, 0, len(d2) - 1)], 0.0)
    right = np.where(j <= len(x) - 3, d2[np.clip(j, 0, len(d2) - 1)], 0.0)
    out[inside] = np.maximum(left, right) * (xq[inside] - x[j]) * (x[j + 1] - xq[inside])
    return out


def nearest_fixed_point(
    f, start: float, window: float, n_scan: int, tol: float
) -> tuple[float | None, int]:
    """The solution of ``x = f(x)`` nearest ``start`` within ``start +- window`` (a scan of
    ``n_scan`` steps, Brent's method to ``tol`` in each sign change of ``f(x) - x``) and the
    number found (None, 0: none).  The focus-indexed corrections' self-consistency (the
    re-check's and the ground-corrected in-orbit check's): a plain iteration oscillates where
    the bias falls with focus almost as fast as focus rises."""
    from scipy.optimize import brentq

    grid = start + np.linspace(-window, window, n_scan + 1)
    res = np.array([f(x) - x for x in grid])
    roots = []
    for a, b, ra, rb in zip(grid[:-1], grid[1:], res[:-1], res[1:], strict=True):
        if ra == 0.0:
            roots.append(float(a))
        elif ra * rb < 0.0:
            roots.append(brentq(lambda x: f(x) - x, a, b, xtol=tol))
    if not roots:
        return None, 0
    return float(min(roots, key=lambda r: abs(r - start))), len(roots)


def sensitivity_scale(sensitivity: float, index: str = "focus") -> float:
    """The factor (>= 1 where ``k <= 1``) by which a focus-indexed correction's sigma is
    divided: ``max(|k|, SENSITIVITY_FLOOR)`` for the focus index; 1 for the TRP1 index,
    whose estimate is the corrected mean itself."""
    return max(abs(float(sensitivity)), SENSITIVITY_FLOOR) if index == "focus" else 1.0


def recheck_systematic_degC(
    n_plateaux: int, change_degC: float, spread_degC: float = 0.0, index: str = "focus"
) -> float | None:
    """The re-check's calibrated systematic sigma (degC) for ``n_plateaux`` later plateaux,
    a T_BF change ``change_degC`` since the earlier campaign and a correction of RMS
    ``spread_degC`` (the offset correction's ``spread_um`` over ``|s|``): the entry of the
    largest calibrated count not above ``n_plateaux`` in :data:`RECHECK_SYSTEMATIC` (or
    :data:`RECHECK_SYSTEMATIC_TRP1` for ``index="trp1"``; None: none)."""
    table = RECHECK_SYSTEMATIC_TRP1 if index == "trp1" else RECHECK_SYSTEMATIC
    have = [n for n in table if n <= n_plateaux]
    if not have:
        return None
    const, rel, spread = table[max(have)]
    return float(np.linalg.norm([const, rel * change_degC, spread * spread_degC]))


def recheck_sigma_degC(
    sigma_fields_degC: float,
    sigma_first_degC: float,
    n_plateaux: int,
    change_degC: float,
    spread_degC: float = 0.0,
    interp_degC: float = 0.0,
    scale: float = 1.0,
    index: str = "focus",
    systematic_degC: float | None = None,
) -> float:
    """The re-check's sigma (degC): the fields' scatter term, the table's interpolation
    error ``interp_degC`` and the systematic term (``systematic_degC`` where given, as a
    calibration trying a term does; else :func:`recheck_systematic_degC` for ``index``),
    divided by the network's sensitivity ``scale`` (:func:`sensitivity_scale`), and the
    earlier T_BF's sigma, in quadrature."""
    sys_degC = systematic_degC
    if sys_degC is None:
        sys_degC = recheck_systematic_degC(n_plateaux, change_degC, spread_degC, index) or 0.0
    inner = sigma_fields_degC**2 + interp_degC**2 + sys_degC**2
    return float(np.sqrt(sigma_first_degC**2 + inner / scale**2))


def load_offset_correction(path: str | Path) -> OffsetCorrection:
    """Read a correction written by :meth:`OffsetCorrection.save`.

    Raises:
        DataError: not such a file.
    """
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if d.pop("format") != FORMAT:
            raise ValueError("unknown format")
        d["offset_um"] = tuple(
            tuple(np.nan if v is None else float(v) for v in row) for row in d["offset_um"]
        )
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        if d.get("s_prior_um_per_degC") is not None:
            d["s_prior_um_per_degC"] = tuple(float(v) for v in d["s_prior_um_per_degC"])
        return OffsetCorrection(**d)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not an offset correction ({exc})") from exc


def measure_offset_correction(
    frames, report: dict, model_dir=None, device: str = "cpu", n_boot: int = 100, seed: int = 0
) -> OffsetCorrection:
    """The correction of model ``model_dir`` (default: the shipped one) on one camera's usable
    ``frames``, labelled by the forward ``report`` of the same campaign (made with
    ``field_focus``), with the s prior of the corrected network's own fit of the campaign
    (:func:`plato_cnn.predict.cnn_bft` with ``n_boot`` replicates and ``seed``)."""
    from plato_cnn.forward import physics_labels
    from plato_cnn.predict import cnn_bft, predict_frames

    pred = predict_frames(frames, model_dir, device)
    corr = fit_offset_correction(
        frames, pred["mu_um"], physics_labels(frames, report), pred["model_card"].sha256()
    )
    fit, _ = cnn_bft(frames, model_dir, n_boot=n_boot, seed=seed, device=device,
                     offset_correction=corr)  # fmt: skip
    ff = report["field_focus"]
    # the field table of the correction, in its order, from the report's
    d = field_distance_deg(ff["theta_deg"], ff["phi_deg"], corr.theta_deg, corr.phi_deg)
    first = dict(
        bft_degC=float(report["bft_degC"]),
        sigma_degC=float(report["sigma_degC"]),
        thermal={k: float(v) for k, v in ff["thermal"].items()},
        dz_best_um=[float(ff["dz_th_best_um"][j]) for j in np.argmin(d, axis=1)],
    )
    return replace(
        corr, s_prior_um_per_degC=(fit.s_um_per_degC, fit.s_sigma_um_per_degC), first=first
    )


def fit_offset_correction(
    frames,
    mu_um: np.ndarray,
    labels_um: np.ndarray,
    model_card_sha256: str,
    sigma_um: np.ndarray | None = None,
) -> OffsetCorrection:
    """The correction of one camera's campaign: its frames, the network's offsets ``mu_um``
    and the frames' physics labels ``labels_um`` (um; NaN labels are left out).

    Each cell (field position, plateau) holds the mean error of its frames; with ``sigma_um``
    (the network's per-frame sigma, um) the mean weighted by ``1 / sigma^2``, as an estimate
    that combines the frames with those weights sees them (the network's error is not the
    same for its confident and its unsure readings).

    Raises:
        DataError: labelled frames on fewer than 2 plateaux.
    """
    mu, lab = np.asarray(mu_um, float), np.asarray(labels_um, float)
    ok = np.isfinite(mu) & np.isfinite(lab)
    wt = np.ones_like(mu) if sigma_um is None else 1.0 / np.asarray(sigma_um, float) ** 2
    ok &= np.isfinite(wt)
    plateaux, p_idx = np.unique(frames.obsid[ok], return_inverse=True)
    if len(plateaux) < 2:
        raise DataError("an offset correction needs labelled frames on >= 2 plateaux")
    fields, f_idx = np.unique(frames.field_id[ok], return_inverse=True)
    n_f, n_p = len(fields), len(plateaux)
    g = f_idx.ravel() * n_p + p_idx.ravel()
    err, w = mu[ok] - lab[ok], wt[ok]
    cnt = np.bincount(g, minlength=n_f * n_p).astype(float)
    sw = np.bincount(g, w, minlength=n_f * n_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(g, w * err, minlength=n_f * n_p) / sw
        # standard error of the (weighted) mean from the frames' scatter about it
        dev2 = np.bincount(g, (w * (err - mean[g])) ** 2, minlength=n_f * n_p)
        var = dev2 / sw**2 * cnt / np.maximum(cnt - 1.0, 1.0)
    t_p = np.bincount(p_idx.ravel(), frames.temperature_degC[ok]) / np.bincount(p_idx.ravel())
    order = np.argsort(t_p)
    table = mean.reshape(n_f, n_p)[:, order]
    have = cnt.reshape(n_f, n_p)[:, order] > 0
    th = np.bincount(f_idx.ravel(), frames.field_theta_deg[ok]) / np.bincount(f_idx.ravel())
    ph = np.bincount(f_idx.ravel(), frames.field_phi_deg[ok]) / np.bincount(f_idx.ravel())
    filled = cnt > 0
    corr = OffsetCorrection(
        theta_deg=tuple(float(v) for v in th),
        phi_deg=tuple(float(v) for v in ph),
        plateau_degC=tuple(float(v) for v in t_p[order]),
        offset_um=tuple(
            tuple(float(v) if h else float("nan") for v, h in zip(row, hrow, strict=True))
            for row, hrow in zip(table, have, strict=True)
        ),
        mean_offset_um=tuple(float(v) for v in np.nanmean(np.where(have, table, np.nan), 0)),
        spread_um=float(np.sqrt(np.mean(mean[filled] ** 2))),
        noise_um=float(np.sqrt(np.mean(var[filled]))),
        model_card_sha256=model_card_sha256,
        camera=str(frames.camera),
    )
    # debug: the commands that build on it (offset-correction, ground-calibration) say their own
    log.debug(
        "offset correction of %s: %d fields x %d plateaux, offsets %.2f um RMS, their "
        "standard errors %.2f um RMS", frames.camera, n_f, n_p, corr.spread_um, corr.noise_um,
    )  # fmt: skip
    return corr
