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
campaigns compared with the plateau spacing (its bias changes with focus).

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

from plato_cnn.forward import field_distance_deg, thermal_shift_um
from plato_sim.errors import DataError, ParameterError

__all__ = [
    "OffsetCorrection",
    "fit_offset_correction",
    "measure_offset_correction",
    "load_offset_correction",
]

log = logging.getLogger(__name__)

FORMAT = "plato-focus-offset-correction/2"
#: Field positions closer than this (deg, |d theta| + |d phi|) are the same position.
SAME_FIELD_DEG = 1e-3


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

    def per_frame(self, frames) -> np.ndarray:
        """Each frame's correction (um): its field's, or the mean over fields, at its TRP1."""
        t = np.asarray(frames.temperature_degC, float)
        tp = np.asarray(self.plateau_degC)
        out = np.interp(t, tp, np.asarray(self.mean_offset_um))
        if not self.theta_deg:
            return out
        d = field_distance_deg(self.theta_deg, self.phi_deg, frames.field_theta_deg,
                      frames.field_phi_deg)  # fmt: skip
        k = np.argmin(d, axis=1)
        hit = d[np.arange(len(t)), k] < SAME_FIELD_DEG
        table = np.asarray(self.offset_um, float)
        for f in np.unique(k[hit]):
            sel = hit & (k == f)
            ok = np.isfinite(table[f])
            out[sel] = np.interp(t[sel], tp[ok], table[f][ok])
        if not hit.all():
            log.info("%d of %d frames at field positions the correction does not hold: mean "
                     "over fields", int((~hit).sum()), len(t))  # fmt: skip
        return out

    def recheck(self, frames, mu_corrected_um: np.ndarray) -> dict:
        """T_BF of the camera's later campaign from the focus change the corrected network
        sees, on the earlier campaign's physics (:attr:`first`).

        Each frame's corrected offset minus the offset the earlier fit predicts for it (its
        field's best focus and the thermal model at its TRP1) is the change ``delta`` of the
        thermal focus between the campaigns; ``delta`` is the mean over field positions of
        their mean (its sigma their scatter over sqrt(fields), and the correction's
        ``noise_um`` in quadrature).  The optics did not change, so the later T_BF is where
        the earlier thermal curve plus ``delta`` reaches the focus the earlier T_BF had.
        Frames at field positions the earlier fit does not hold are left out.

        Returns:
            ``bft_degC``, ``sigma_degC`` (with the earlier T_BF's sigma in quadrature),
            ``delta_um``, ``sigma_delta_um``, ``fields``, ``frames``.

        Raises:
            DataError: no :attr:`first` block, or no frame at a field the earlier fit holds.
        """
        if not self.first:
            raise DataError("this offset correction holds no forward fit of the earlier campaign")
        th = self.first["thermal"]

        def dz(t):  # the earlier fit's thermal focus (um)
            return thermal_shift_um(self.first, t)

        d = field_distance_deg(
            self.theta_deg, self.phi_deg, frames.field_theta_deg, frames.field_phi_deg
        )
        k = np.argmin(d, axis=1)
        hit = (d[np.arange(len(k)), k] < SAME_FIELD_DEG) & np.isfinite(mu_corrected_um)
        if not hit.any():
            raise DataError("no frame at a field position of the earlier campaign")
        predicted = dz(frames.temperature_degC) - np.asarray(self.first["dz_best_um"])[k]
        diff = (np.asarray(mu_corrected_um, float) - predicted)[hit]
        kf = k[hit]
        per_field = np.bincount(kf, diff) / np.maximum(np.bincount(kf), 1)
        per_field = per_field[np.bincount(kf) > 0]
        delta = float(per_field.mean())
        spread = float(per_field.std(ddof=1)) if len(per_field) > 1 else float("inf")
        sig_delta = float(np.hypot(spread / np.sqrt(len(per_field)), self.noise_um))
        # the focus the earlier T_BF had, reached now where dz(T) = dz(T_BF) - delta
        target = float(dz(self.first["bft_degC"])) - delta
        t = _solve_thermal(th, target, self.first["bft_degC"])
        slope = th["s_um_per_degC"] + 2 * th["q_um_per_degC2"] * (t - th["t_ref_degC"])
        sigma = float(np.hypot(sig_delta / abs(slope), self.first["sigma_degC"]))
        return dict(bft_degC=t, sigma_degC=sigma, delta_um=delta, sigma_delta_um=sig_delta,
                    fields=int(len(per_field)), frames=int(hit.sum()))  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the correction as JSON (atomically; NaN as null)."""
        from plato_sim.io.atomic import atomic_write_text

        d = asdict(self)
        d["offset_um"] = [[v if np.isfinite(v) else None for v in row] for row in d["offset_um"]]
        path = Path(path)
        atomic_write_text(path, json.dumps({"format": FORMAT, **d}, indent=1))
        return path


def _solve_thermal(th: dict, target_um: float, near_degC: float) -> float:
    """The TRP1 temperature (degC) nearest ``near_degC`` where ``b + s d + q d^2`` equals
    ``target_um`` (``d = T - t_ref``); the linear solution when the curve has no root."""
    b, s, q, t_ref = th["b_um"], th["s_um_per_degC"], th["q_um_per_degC2"], th["t_ref_degC"]
    lin = t_ref + (target_um - b) / s
    if abs(q) < 1e-12:
        return float(lin)
    disc = s * s - 4 * q * (b - target_um)
    if disc < 0:
        return float(lin)
    roots = t_ref + (-s + np.array([1.0, -1.0]) * np.sqrt(disc)) / (2 * q)
    return float(roots[np.argmin(np.abs(roots - near_degC))])


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
    frames, mu_um: np.ndarray, labels_um: np.ndarray, model_card_sha256: str
) -> OffsetCorrection:
    """The correction of one camera's campaign: its frames, the network's offsets ``mu_um``
    and the frames' physics labels ``labels_um`` (um; NaN labels are left out).

    Raises:
        DataError: labelled frames on fewer than 2 plateaux.
    """
    mu, lab = np.asarray(mu_um, float), np.asarray(labels_um, float)
    ok = np.isfinite(mu) & np.isfinite(lab)
    plateaux, p_idx = np.unique(frames.obsid[ok], return_inverse=True)
    if len(plateaux) < 2:
        raise DataError("an offset correction needs labelled frames on >= 2 plateaux")
    fields, f_idx = np.unique(frames.field_id[ok], return_inverse=True)
    n_f, n_p = len(fields), len(plateaux)
    g = f_idx.ravel() * n_p + p_idx.ravel()
    err = mu[ok] - lab[ok]
    cnt = np.bincount(g, minlength=n_f * n_p).astype(float)
    s1 = np.bincount(g, err, minlength=n_f * n_p)
    s2 = np.bincount(g, err**2, minlength=n_f * n_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
        var = np.maximum(s2 / cnt - mean**2, 0.0) / np.maximum(cnt - 1.0, 1.0)
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
    log.info(
        "offset correction of %s: %d fields x %d plateaux, offsets %.2f um RMS, their "
        "standard errors %.2f um RMS", frames.camera, n_f, n_p, corr.spread_um, corr.noise_um,
    )  # fmt: skip
    return corr
