"""Fine-tuning on ground-test campaigns whose only labels are the TRP1 temperatures.

Two label sources (:attr:`FinetuneConfig.labels`, docs/cnn.md section 5):

* ``"forward"`` (default): physics labels.  Each camera is fitted by the forward method
  (:func:`plato_cnn.forward.forward_bft` with ``field_focus``), which measures its optics on
  its own images; each frame is labelled with its focal offset from its field's best focus
  under those optics (:func:`plato_cnn.forward.physics_labels`), the quantity the network is
  pretrained on.  With three or more cameras the fine-tuned model's systematic sigma is
  measured by leave-one-camera-out fine-tunings (:attr:`FinetuneConfig.cv_sigma`).
* ``"eef"``: the EEF-anchored, self-consistent pseudo-labels described below.

The true offsets of real frames are unknown, but the physics ties them together: within one
camera the thermal focal shift is a piston, linear in temperature, so for every frame ``i`` of
field position ``f``::

    delta_i = s_c (T_i - T_f)

with one sensitivity ``s_c`` per camera (free, even its sign) and one optimal temperature
``T_f`` per field position.  The method (per camera):

1. **The images' own EEF** anchors ``T_f`` (once, before training): per field position, the
   mean ensquared-energy fraction of its frames on each plateau is fitted against TRP1 with
   the improved classical estimator's shape (``log EEF`` a cubic in T with >= 4 plateaux, a
   quadratic with 3; :mod:`plato_cnn.classical`) and ``T_f`` is its maximum.  This uses no
   optical model: it is the classical measurement, made per field position.  (The earlier
   anchor, the nominal field-averaged EEF template, ``anchor="template"``, assumes the
   design's EEF-curve width and skew, which is wrong for exactly the cameras fine-tuning
   is for.)  The anchors are then shifted together so that their mean is the improved
   classical T_BF of the camera (``centre_on_classical``): one field's curve rests on ~10
   frames per plateau and the argmax of a noisy cubic is biased, the field-averaged curve is
   measured with 40 times more.  It needs >= 3 plateaux, which a ground-test campaign has.
2. **Self-consistency** gives ``s_c`` (every epoch): the network's current predictions on the
   camera's frames are regressed on ``T_i - T_f`` (robust, through the anchors).  The scale
   of ``delta`` is what the images alone cannot fix without an optical model, and it does not
   matter for ``T_BF`` with >= 2 plateaux, so the network's own scale is kept.
3. **Pseudo-labels** ``s_c (T_i - T_f)`` train the offset by least squares at a fixed scale
   (``mu_sigma_um``) and the sigma head by the likelihood of the detached offset: with the
   Gaussian likelihood alone the network could absorb a wrong offset by widening sigma.

Collapse guards: the pseudo-labels carry the anchors' temperatures (a network that predicted
zero everywhere would get labels that are not zero), an L2-SP penalty keeps the weights near
the pretrained ones, and a synthetic dataset (if given) is replayed with its true labels in
every epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from plato_cnn.classical import EXTRAPOLATE_DEGC, _shape_fit, improved_bft
from plato_cnn.fit import EEFTemplate, fit_thermal_model
from plato_cnn.forward import physics_labels
from plato_cnn.nn.card import load_model, save_model
from plato_cnn.nn.data import ArrayFocusDataset
from plato_cnn.nn.model import FocusNet, prepare_inputs
from plato_cnn.predict import network_stamps
from plato_cnn.robust import huber_weights
from plato_sim.errors import ParameterError
from plato_sim.io.atomic import atomic_write_text
from plato_sim.truth.bestfocus import TRUTH_N_SUB

log = logging.getLogger(__name__)

__all__ = [
    "FinetuneConfig",
    "eef_field_optima",
    "eef_field_optima_logpoly",
    "field_anchors",
    "pseudo_labels",
    "finetune",
    "fit_forward_reports",
    "name_slug",
]


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-4
    l2sp_weight: float = 1e-3
    synthetic_samples_per_epoch: int = 4096
    min_plateaux: int = 3
    seed: int = 0
    s_prior_um_per_degC: tuple[float, float] = (10.0, 10.0)
    #: field anchors: "logpoly" (per-field classical fit) or "template" (nominal EEF curve)
    anchor: str = "logpoly"
    #: shift the per-field anchors so that their mean is the improved classical T_BF (the
    #: field-averaged EEF curve is measured with 40x the frames of one field's curve)
    centre_on_classical: bool = True
    #: fixed scale of the offset's least-squares loss (um); None: Gaussian likelihood
    mu_sigma_um: float | None = 5.0
    #: keep the batch-norm statistics of pretraining (the layers' scale and shift still
    #: learn): a few cameras' batches are no estimate of the population statistics, and
    #: updating them moves every prediction in eval mode (a shift of several um)
    freeze_batchnorm: bool = True
    #: with physics labels and >= 3 cameras: measure the fine-tuned model's systematic sigma
    #: by leave-one-camera-out (one extra fine-tuning per camera) instead of borrowing the base
    #: model's, which was calibrated in the simulator's population
    cv_sigma: bool = True
    #: labels: "forward" (physics: each frame's focal offset from its field's best focus
    #: under the optics the forward fit measured on the camera's own images) or "eef"
    #: (the EEF-anchored self-consistent pseudo-labels above)
    labels: str = "forward"
    #: with physics labels: also train on a campaign of each *fitted* camera re-simulated at
    #: the fitted T_BF + RESIM_OFFSETS_DEGC (plato_cnn.resimulate), with its exact labels, so
    #: that the network sees the camera's optics near focus and beyond the plateaux
    resimulate: bool = False
    #: dithers and frames per dither of each re-simulated plateau (per field position)
    resim_dithers: int = 5
    resim_frames_per_dither: int = 2
    #: sub-pixel grid of the re-simulated campaigns' truth (n x n; the project's default)
    resim_n_sub_truth: int = TRUTH_N_SUB
    #: with ``resimulate``: also this many cameras *like* each fitted one
    #: (:func:`plato_cnn.resimulate.varied_camera`: turned, mirrored, each Noll term's
    #: amplitude and the diffusion scaled), each imaged at the same plateaux with
    #: ``variant_dithers`` x ``variant_frames_per_dither`` frames per field and plateau, so
    #: that the network sees the variety of a family the few measured cameras do not show
    resim_variants: int = 0
    variant_dithers: int = 2
    variant_frames_per_dither: int = 1
    #: sub-pixel grid of the variants' truth T_BF (only their plateaux depend on it; the labels
    #: are each field's own EEF-optimal focus on the 4 x 4 grid of the synthetic datasets)
    variant_n_sub_truth: int = 4
    #: OGSE samples of the re-simulated campaigns and their labels (the emulator's 10)
    resim_n_wavelengths: int = 10
    #: at most this fraction of each epoch's frames from the varied cameras (a new random
    #: subset every epoch), so that many variants add variety without outnumbering the
    #: measured frames; None: all of them every epoch
    variant_share: float | None = None
    #: with physics labels, ``epochs`` is a maximum: training stops when the fit to the
    #: fine-tuning cameras' own labels (the RMS of the (field, plateau) means of network minus
    #: label, averaged over the cameras; :func:`_label_fit_um`) has not improved by
    #: ``min_gain`` for ``patience`` epochs, and the best epoch's weights are kept.  It is
    #: chosen on the cameras trained on, never on a held-out one.  0: run every epoch.
    patience: int = 2
    min_gain: float = 0.02


def eef_field_optima(
    eef_values: np.ndarray,
    temperature_degC: np.ndarray,
    field_index: np.ndarray,
    plateau_index: np.ndarray,
    s_um_per_degC: float,
    template: EEFTemplate,
    n_fields: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per field, the temperature where its measured EEF peaks, from the EEF-curve shape.

    For each field the mean EEF per plateau ``m_p`` is fitted by ``A g(s (T_p - T_f))`` with
    ``A`` free (least squares) on a grid of ``T_f``.  Returns ``(T_f, rms residual)``; NaN for
    fields with fewer than 3 plateaux.
    """
    n_p = int(plateau_index.max()) + 1
    flat = plateau_index * n_fields + field_index
    ok = np.isfinite(eef_values)
    s = np.bincount(flat[ok], eef_values[ok], n_p * n_fields).reshape(n_p, n_fields)
    c = np.bincount(flat[ok], minlength=n_p * n_fields).reshape(n_p, n_fields)
    ts = np.bincount(flat, temperature_degC, n_p * n_fields).reshape(n_p, n_fields)
    cn = np.bincount(flat, minlength=n_p * n_fields).reshape(n_p, n_fields)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s / c
        tp = ts / cn
    t_f = np.full(n_fields, np.nan)
    rms = np.full(n_fields, np.nan)
    for f in range(n_fields):
        good = np.isfinite(m[:, f]) & np.isfinite(tp[:, f])
        if good.sum() < 3:
            continue
        y, t = m[good, f], tp[good, f]
        grid = np.linspace(t.min() - 5.0, t.max() + 5.0, 601)
        g = template(s_um_per_degC * (t[None, :] - grid[:, None]))  # (G, P)
        a = np.sum(g * y, axis=1) / np.maximum(np.sum(g * g, axis=1), 1e-12)
        res = np.sum((y[None, :] - a[:, None] * g) ** 2, axis=1)
        k = int(np.argmin(res))
        t_f[f] = grid[k]
        rms[f] = math.sqrt(res[k] / good.sum())
    return t_f, rms


def eef_field_optima_logpoly(
    eef_values: np.ndarray,
    temperature_degC: np.ndarray,
    field_index: np.ndarray,
    plateau_index: np.ndarray,
    n_fields: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per field, the maximum of ``log`` (mean EEF per plateau) fitted by a polynomial in T.

    The improved classical estimator's shape (:func:`plato_cnn.classical.improved_bft`),
    applied to one field position: cubic with >= 4 plateaux, quadratic with 3, weighted by
    the standard error of each plateau's mean, maximum allowed ``EXTRAPOLATE_DEGC`` beyond the
    sampled range.  Returns ``(T_f, rms residual of log EEF)``; NaN for fields with fewer
    than 3 plateaux.
    """
    n_p = int(plateau_index.max()) + 1
    flat = plateau_index * n_fields + field_index
    ok = np.isfinite(eef_values) & (eef_values > 0)
    shape = (n_p, n_fields)
    c = np.bincount(flat[ok], minlength=n_p * n_fields).reshape(shape)
    s1 = np.bincount(flat[ok], eef_values[ok], n_p * n_fields).reshape(shape)
    s2 = np.bincount(flat[ok], eef_values[ok] ** 2, n_p * n_fields).reshape(shape)
    ts = np.bincount(flat, temperature_degC, n_p * n_fields).reshape(shape)
    cn = np.bincount(flat, minlength=n_p * n_fields).reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s1 / c
        var = np.maximum(s2 / c - m**2, 0.0) * c / np.maximum(c - 1, 1)
        sem = np.sqrt(var / c)
        tp = ts / cn
    t_f = np.full(n_fields, np.nan)
    rms = np.full(n_fields, np.nan)
    for f in range(n_fields):
        good = (c[:, f] >= 2) & np.isfinite(tp[:, f]) & (m[:, f] > 0)
        n_good = int(good.sum())
        if n_good < 3:
            continue
        t, y = tp[good, f], m[good, f]
        sig = np.maximum(sem[good, f], 1e-3 * y)
        deg = 3 if n_good >= 4 else 2
        lo, hi = float(t.min()) - EXTRAPOLATE_DEGC, float(t.max()) + EXTRAPOLATE_DEGC
        t_f[f], _, coef, tm = _shape_fit(t, y, sig, lo, hi, deg)
        rms[f] = float(np.sqrt(np.mean((np.log(y) - np.polyval(coef, t - tm)) ** 2)))
    return t_f, rms


def _slope_through_anchors(
    delta_um: np.ndarray, sigma_um: np.ndarray, x_degC: np.ndarray, huber_k: float = 2.0
) -> float:
    """Robust weighted LS slope of ``delta = s x`` (Huber re-weighting), ``x = T - T_f``."""
    ok = np.isfinite(delta_um) & np.isfinite(x_degC) & np.isfinite(sigma_um)
    d, x = delta_um[ok], x_degC[ok]
    w0 = 1.0 / np.maximum(sigma_um[ok], 1e-3) ** 2
    w = w0.copy()
    s = 0.0
    for _ in range(8):
        s = float(np.sum(w * d * x) / max(np.sum(w * x * x), 1e-12))
        w = w0 * huber_weights((d - s * x) * np.sqrt(w0), huber_k)
    return s


def field_anchors(
    frames, eef_values: np.ndarray, centre_on_classical: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """The ``"logpoly"`` anchors of one camera: ``(T_f, rms, sigma of their mean)``.

    ``T_f`` per field of ``np.unique(frames.field_id)`` (:func:`eef_field_optima_logpoly`),
    shifted together onto the camera's improved classical T_BF when ``centre_on_classical``
    (then the sigma is that estimate's; NaN otherwise).
    """
    _, plateau = np.unique(frames.obsid, return_inverse=True)
    fids, f = np.unique(frames.field_id, return_inverse=True)
    t_f, rms = eef_field_optima_logpoly(eef_values, frames.temperature_degC, f, plateau, len(fids))
    sigma = float("nan")
    if centre_on_classical:
        cl = improved_bft(frames, eef_values=eef_values, n_boot=100, seed=seed)
        t_f = t_f - np.nanmean(t_f) + cl.bft_degC
        sigma = float(cl.sigma_degC)
    return t_f, rms, sigma


@torch.no_grad()
def pseudo_labels(
    model: FocusNet,
    frames,
    eef_values: np.ndarray,
    template: EEFTemplate | None,
    s_prior: tuple[float, float],
    anchor: str = "logpoly",
    anchors: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict]:
    """Pseudo-labels (um) for the usable frames of one camera, and the fitted quantities.

    ``anchors`` (``(T_f, rms)`` per field of ``np.unique(frames.field_id)``) skips the
    per-field EEF fit when it was computed before (``anchor="logpoly"`` does not change
    between epochs).
    """
    pred = model.predict(network_stamps(frames), frames.field_theta_deg, frames.field_phi_deg)
    _, plateau = np.unique(frames.obsid, return_inverse=True)
    fids, f = np.unique(frames.field_id, return_inverse=True)
    s_net, s_sig, t_f_net = fit_thermal_model(
        pred["mu_um"], pred["sigma_um"], frames.temperature_degC, f, len(fids), s_prior
    )
    if anchor == "template":
        if template is None:
            raise ParameterError('anchor="template" needs the model\'s EEF template')
        t_f, rms = eef_field_optima(
            eef_values, frames.temperature_degC, f, plateau, abs(s_net), template, len(fids)
        )
    elif anchors is not None:
        t_f, rms = anchors
    else:
        t_f, rms, _ = field_anchors(frames, eef_values)
    x = frames.temperature_degC - t_f[f]
    s = _slope_through_anchors(pred["mu_um"], pred["sigma_um"], x)
    labels = s * x
    info = {
        "anchor": anchor,
        "s_um_per_degC": float(s),
        "s_free_fit_um_per_degC": float(s_net),
        "s_sigma_um_per_degC": float(s_sig),
        "t_field_eef_degC": t_f.tolist(),
        "t_field_net_degC": t_f_net.tolist(),
        "net_minus_eef_degC_mean": float(np.nanmean(t_f_net - t_f)),
        "net_minus_eef_degC_rms": float(np.sqrt(np.nanmean((t_f_net - t_f) ** 2))),
        "eef_fit_rms": float(np.nanmean(rms)),
    }
    return labels, info


def _resim_tag(report: dict, *design) -> str:
    """8 hex digits of what defines a re-simulated campaign: the fitted camera (the forward
    report's parameters, wavefront table, plateaux and thermal zero) and ``design`` (dithers,
    frames, truth grid, wavelengths, variant ranges).  Part of its folder's name, so that a
    folder kept from another fit, design or range is never taken for this one (a kept folder
    is reused on the strength of its truth file alone)."""
    key = [report.get(k) for k in ("params", "wavefront", "plateaux_degC", "t0_degC")]
    text = json.dumps([key, list(design)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _resimulated_sets(
    frames_list: list, reports: list[dict], folder: Path, cfg: FinetuneConfig
) -> dict[int, tuple[Dataset, Dataset | None]]:
    """Per camera, its fitted camera re-simulated (:func:`plato_cnn.resimulate.
    resimulate_campaign`, kept under ``folder``) as a dataset with exact labels, and its
    varied cameras' frames (None without ``resim_variants``)."""
    from plato_cnn.reader import read_campaign
    from plato_cnn.resimulate import (
        VARIANT_AMPLITUDE,
        VARIANT_DIFFUSION,
        fitted_camera,
        resimulate_campaign,
        resimulated_labels,
        varied_camera,
    )
    from plato_sim.optics.spectra import ogse_spectrum

    def imaged(k, rep, d, cam, seed: int, name: str, dithers: int, frames: int, n_sub: int):
        cam, _truth = resimulate_campaign(
            rep, d, n_dithers=dithers, frames_per_dither=frames, seed=seed, camera_name=name,
            n_sub_truth=n_sub, camera=cam, n_wavelengths=cfg.resim_n_wavelengths,
        )  # fmt: skip
        rf = read_campaign(d)
        rf = rf.select(rf.usable)
        sp = ogse_spectrum(cam.optics.camera, cfg.resim_n_wavelengths)
        lab = resimulated_labels(rf, cam, spectrum=sp)
        return ArrayFocusDataset(
            network_stamps(rf), rf.field_theta_deg, rf.field_phi_deg, lab, np.full(len(rf), k)
        )

    out = {}
    for k, (fr, rep) in enumerate(zip(frames_list, reports, strict=True)):
        stem = f"cam{k:02d}_{name_slug(fr.camera)}_s{cfg.seed}"
        design = (cfg.resim_dithers, cfg.resim_frames_per_dither, cfg.resim_n_sub_truth)
        d = folder / f"{stem}_{_resim_tag(rep, *design, cfg.resim_n_wavelengths)}"
        vtag = _resim_tag(rep, cfg.variant_dithers, cfg.variant_frames_per_dither,
                          cfg.variant_n_sub_truth, cfg.resim_n_wavelengths, VARIANT_AMPLITUDE,
                          VARIANT_DIFFUSION)  # fmt: skip
        log.info("finetune: re-simulating the fitted camera %s in %s", fr.camera, d)
        parts = [imaged(k, rep, d, None, cfg.seed * 1000 + k, f"resim{k:02d}", *design)]
        fitted = fitted_camera(rep)
        for v in range(cfg.resim_variants):
            cam = varied_camera(fitted, np.random.default_rng((cfg.seed, k, v)))
            parts.append(
                imaged(
                    k,
                    rep,
                    folder / f"{stem}_{vtag}_v{v:02d}",
                    cam,
                    (cfg.seed * 1000 + k) * 1000 + v + 1,
                    f"var{k:02d}{v:02d}",
                    cfg.variant_dithers,
                    cfg.variant_frames_per_dither,
                    cfg.variant_n_sub_truth,
                )
            )
        if cfg.resim_variants:
            log.info("finetune: %d varied cameras of %s imaged", cfg.resim_variants, fr.camera)
        out[k] = (parts[0], ConcatDataset(parts[1:]) if len(parts) > 1 else None)
    return out


def _variant_subset(
    variants: list[Dataset], n_other: int, share: float | None, rng: np.random.Generator
) -> list[Dataset]:
    """The varied cameras' frames for one epoch: all of them, or a random subset holding at
    most ``share`` of the epoch's frames (``n_other`` being the rest)."""
    n_var = sum(len(v) for v in variants)
    if share is None or n_var == 0:
        return variants
    keep = min(n_var, int(share / (1.0 - share) * n_other))
    pool = ConcatDataset(variants)
    return [Subset(pool, np.sort(rng.choice(n_var, keep, replace=False)).tolist())]


def name_slug(name: str) -> str:
    """``name`` as a file-name part: letters and digits kept, anything else ``-``, 40 at most."""
    return "".join(c if c.isalnum() else "-" for c in str(name))[:40]


def fit_forward_reports(frames_list: list, given: list[dict] | None, seed: int) -> list[dict]:
    """Forward-fit reports with ``field_focus`` of every camera (given ones are checked)."""
    from plato_cnn.forward import forward_bft

    if given is not None:
        if len(given) != len(frames_list):
            raise ParameterError(
                f"{len(given)} forward reports for {len(frames_list)} campaigns: one per campaign"
            )
        for k, r in enumerate(given):
            if "field_focus" not in r:
                raise ParameterError(
                    f"forward report {k} has no field_focus block: fit with field_focus=True "
                    "(plato-cnn bft --method forward --field-focus)"
                )
        return list(given)
    out = []
    for k, fr in enumerate(frames_list):
        log.info("finetune: forward fit of camera %s (%d/%d)", fr.camera, k + 1, len(frames_list))
        r = forward_bft(fr, seed=seed, field_focus=True)
        if r["outside_model"]:
            log.warning(
                "finetune: the forward fit of %s has chi^2 beyond its model (%.2f): its labels "
                "carry that misfit",
                fr.camera,
                r["chi2"]["reduced"],
            )
        out.append(r)
    return out


def _report_summary(r: dict) -> dict:
    """What the fine-tuning summary keeps of one forward report."""
    return {
        "bft_degC": r["bft_degC"],
        "sigma_degC": r["sigma_degC"],
        "chi2_reduced": r["chi2"]["reduced"],
        "outside_model": r["outside_model"],
        "s_um_per_degC": r["s_um_per_degC"],
    }


@torch.no_grad()
def _label_agreement(model: FocusNet, frames, labels: np.ndarray) -> dict:
    """The network's predicted offsets against physics labels (um): mean and RMS difference
    per frame, and the part that does not average out, which is what moves a T_BF: the mean
    difference per plateau (the thermal-model fit sees these) and the RMS over (field,
    plateau) groups of the mean difference.  A single stamp's offset is uncertain by
    ~20 um even in the training population (the shipped model's validation RMSE, 19 um), so
    the per-frame RMS says little about a fine-tuning's effect on T_BF."""
    pred = model.predict(network_stamps(frames), frames.field_theta_deg, frames.field_phi_deg)
    d = pred["mu_um"] - labels
    ok = np.isfinite(d)
    obsids, pl = np.unique(frames.obsid[ok], return_inverse=True)
    per_plateau = np.bincount(pl, d[ok]) / np.bincount(pl)
    _, grp = np.unique(np.c_[frames.obsid[ok], frames.field_id[ok]], axis=0, return_inverse=True)
    group_means = np.bincount(grp.ravel(), d[ok]) / np.bincount(grp.ravel())
    return {
        "labels": "forward",
        "net_minus_label_um_mean": float(np.mean(d[ok])),
        "net_minus_label_um_rms": float(np.sqrt(np.mean(d[ok] ** 2))),
        "per_plateau_mean_um": {
            str(int(o)): float(v) for o, v in zip(obsids, per_plateau, strict=True)
        },
        "field_plateau_mean_rms_um": float(np.sqrt(np.mean(group_means**2))),
        "frames": int(ok.sum()),
    }


def _label_fit_um(infos: list[dict]) -> float | None:
    """The fit of the network to physics labels over cameras: the mean of their RMS of
    (field, plateau) means (um); None for labels without it (EEF pseudo-labels)."""
    v = [i["field_plateau_mean_rms_um"] for i in infos if "field_plateau_mean_rms_um" in i]
    return float(np.mean(v)) if v and len(v) == len(infos) else None


class _BestEpoch:
    """Early stopping on the label fit of the cameras trained on (:class:`FinetuneConfig`
    ``patience``, ``min_gain``): remembers the best weights and says when to stop."""

    def __init__(self, cfg: FinetuneConfig):
        self.patience, self.min_gain = cfg.patience, cfg.min_gain
        self.fit, self.epoch, self.state = math.inf, -1, None

    def stop(self, model: FocusNet, fit_um: float | None, epochs_done: int) -> bool:
        """Record the fit after ``epochs_done`` epochs; True when training should stop."""
        if fit_um is None or self.patience <= 0:
            return False
        if fit_um < self.fit * (1.0 - self.min_gain):
            self.fit, self.epoch = fit_um, epochs_done
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        return epochs_done - self.epoch >= self.patience

    def restore(self, model: FocusNet, fit_um: float | None) -> int | None:
        """Put the best weights back unless the last ones fit as well; the epoch kept."""
        if self.state is None or fit_um is None or fit_um <= self.fit:
            return None
        model.load_state_dict(self.state)
        return self.epoch


def _train(
    model: FocusNet,
    cams: list[int],
    datasets,
    cfg: FinetuneConfig,
    synthetic: Dataset | None,
    progress: bool,
) -> tuple[list[dict], list[dict]]:
    """The epochs of fine-tuning ``model`` (in place) on cameras ``cams``; ``datasets(model,
    cams)`` gives each epoch's labelled frames and the label statistics of the network as it
    stands (after the previous epoch), which drive the early stopping (:class:`_BestEpoch`).
    Returns the loss history (with the label fit after each epoch, and ``kept_epoch`` on the
    entry of the epoch whose weights were kept) and the label statistics before training."""
    torch.manual_seed(cfg.seed)
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict] = []
    before: list[dict] = []
    best = _BestEpoch(cfg)
    for epoch in range(cfg.epochs):
        parts, infos = datasets(model, cams)
        fit_um = _label_fit_um(infos)
        if epoch == 0:
            before = infos
        else:
            history[-1]["label_fit_um"] = fit_um
        if best.stop(model, fit_um, epoch):
            log.info("finetune: the label fit stopped improving; stop after %d epochs", epoch)
            break
        sets: list[Dataset] = list(parts)
        if synthetic is not None and cfg.synthetic_samples_per_epoch > 0:
            n = min(len(synthetic), cfg.synthetic_samples_per_epoch)
            sets.append(Subset(synthetic, rng.choice(len(synthetic), n, replace=False).tolist()))
        loader = DataLoader(
            ConcatDataset(sets),
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),
        )
        model.train()
        if cfg.freeze_batchnorm:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        tot, n_seen = 0.0, 0
        for stamp, theta, phi, target in loader:
            img, sc = prepare_inputs(stamp, theta, phi, model.config.crop)
            loss, _ = FocusNet.loss(model(img, sc), target.float(), fixed_sigma_um=cfg.mu_sigma_um)
            loss = loss + cfg.l2sp_weight * _l2sp(model, ref)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            tot += float(loss.detach()) * len(target)
            n_seen += len(target)
        history.append({"epoch": epoch + 1, "loss": tot / max(1, n_seen), "samples": n_seen})
        if progress:
            log.info("finetune epoch %d/%d: loss %.4f", epoch + 1, cfg.epochs, tot / max(1, n_seen))
    model.eval()
    if best.state is not None and history and "label_fit_um" not in history[-1]:
        history[-1]["label_fit_um"] = _label_fit_um(datasets(model, cams)[1])
    kept = best.restore(model, history[-1].get("label_fit_um") if history else None)
    if kept is not None:
        log.info("finetune: weights of epoch %d kept (best label fit)", kept)
    for h in history:
        if h["epoch"] == (kept if kept is not None else len(history)):
            h["kept_epoch"] = True
    return history, before


def _cross_validated_errors(
    base: Path, frames_list: list, reports: list[dict], meta: dict, cfg, synthetic, datasets
) -> dict[str, dict]:
    """Leave-one-camera-out: fine-tune on the other cameras, score the held-out one with
    every plateau subset it allows against its forward-fit T_BF (the label source, ~0.01 degC);
    per plateau count the systematic term that makes ``|error| <= sigma`` hold for 68 % of
    the cameras (:func:`plato_cnn.pipelines.calibrate_forward.systematic_from_errors`)."""
    import tempfile

    from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS
    from plato_cnn.pipelines.calibrate_forward import systematic_from_errors
    from plato_cnn.predict import cnn_bft

    n = len(frames_list)
    per_cam: list[dict] = []
    for j in range(n):
        log.info("finetune: cross-validation, camera %d/%d held out", j + 1, n)
        net, _ = load_model(base)
        _train(net, [k for k in range(n) if k != j], datasets, cfg, synthetic, False)
        errs = {}
        with tempfile.TemporaryDirectory() as tmp:
            save_model(net, tmp, meta)
            fr = frames_list[j]
            for k, temps in PLATEAU_SUBSETS.items():
                try:
                    f, _ = cnn_bft(fr.select(fr.plateau_mask(temps)), tmp, n_boot=100,
                                   seed=cfg.seed, systematic=False)  # fmt: skip
                except (ValueError, RuntimeError) as exc:  # this campaign cannot give it
                    log.info("finetune: cross-validation %d plateaux skipped: %s", k, exc)
                    continue
                errs[str(k)] = (f.bft_degC - reports[j]["bft_degC"], f.sigma_degC, 0.0)
        per_cam.append(errs)
    keys = [str(k) for k in PLATEAU_SUBSETS if all(str(k) in c for c in per_cam)]
    table = systematic_from_errors([{k: c[k] for k in keys} for c in per_cam], keys)
    for v in table.values():
        v.pop("mean_wall_s", None)
    return table


def _l2sp(model: FocusNet, ref: dict[str, torch.Tensor]) -> torch.Tensor:
    tot = torch.zeros(())
    for name, p in model.named_parameters():
        tot = tot + ((p - ref[name]) ** 2).sum()
    return tot


# Long because: set-up, the epoch loop and the model card share the anchors,
# optimiser and reference weights; the loop body is already in helpers.
def finetune(
    frames_list: list,
    out_dir: str | Path,
    base_model_dir: str | Path | None = None,
    config: FinetuneConfig | None = None,
    synthetic: Dataset | None = None,
    progress: bool = True,
    forward_reports: list[dict] | None = None,
) -> dict:
    """Fine-tune a model on campaigns (list of usable :class:`CampaignFrames`, one per camera).

    With ``config.labels == "forward"`` (the default) each camera is first fitted by the
    forward method (:func:`plato_cnn.forward.forward_bft` with ``field_focus``; minutes per
    camera) unless its report is given in ``forward_reports`` (same order as
    ``frames_list``), and its frames are labelled with their focal offset from their field's
    best focus under the fitted optics (:func:`plato_cnn.forward.physics_labels`).

    Returns a summary (per camera, before and after: with physics labels the network's
    agreement with them (um); with ``"eef"`` labels s, the EEF-anchored field temperatures and
    the mean offset of the network's field temperatures from them; with physics labels also
    each forward fit's T_BF, sigma and chi^2).
    """
    from plato_cnn.metrics import frame_eef
    from plato_cnn.nn.card import default_model_dir

    cfg = config or FinetuneConfig()
    base = Path(base_model_dir or default_model_dir())
    if cfg.anchor not in ("logpoly", "template"):
        raise ParameterError(f"anchor={cfg.anchor!r}: 'logpoly' or 'template'")
    model, desc = load_model(base)
    template = None
    if cfg.anchor == "template":
        if desc.eef_template is None:
            raise ParameterError(f"{base}: model has no EEF template (needed to anchor the fields)")
        template = desc.eef_template
    if cfg.labels not in ("forward", "eef"):
        raise ParameterError(f"labels={cfg.labels!r}: 'forward' or 'eef'")
    physics = cfg.labels == "forward"
    if cfg.resimulate and not physics:
        raise ParameterError("resimulate needs physics labels (labels='forward')")
    if cfg.resim_variants < 0 or (cfg.resim_variants and not cfg.resimulate):
        raise ParameterError(
            f"resim_variants={cfg.resim_variants}: >= 0, and only with resimulate=True"
        )
    if cfg.variant_share is not None and not 0.0 < cfg.variant_share < 1.0:
        raise ParameterError(f"variant_share={cfg.variant_share}: in (0, 1) or None")
    need = 2 if physics else cfg.min_plateaux
    for k, fr in enumerate(frames_list):
        n_plat = len(np.unique(fr.obsid))
        if n_plat < need:
            why = "the forward fit to measure s" if physics else "the EEF to anchor the fields"
            raise ParameterError(
                f"campaign {k} ({fr.camera}): {n_plat} plateaux; fine-tuning needs >= {need} "
                f"for {why}"
            )
    torch.manual_seed(cfg.seed)
    eefs = [frame_eef(fr.stamps) for fr in frames_list]
    anchors = [None] * len(frames_list)
    anchor_sigmas: list[float] = []
    fixed_labels: list[np.ndarray] | None = None
    resim: dict[int, tuple[Dataset, Dataset | None]] = {}
    variant_rng = np.random.default_rng((cfg.seed, 1))
    if physics:
        reports = fit_forward_reports(frames_list, forward_reports, cfg.seed)
        fixed_labels = [physics_labels(fr, r) for fr, r in zip(frames_list, reports, strict=True)]
        anchor_sigmas = [float(r["sigma_degC"]) for r in reports]
        if cfg.resimulate:
            resim = _resimulated_sets(frames_list, reports, Path(out_dir) / "resimulated", cfg)
    elif cfg.anchor == "logpoly":
        for k, fr in enumerate(frames_list):
            t_f, rms, sig = field_anchors(fr, eefs[k], cfg.centre_on_classical, cfg.seed)
            anchors[k] = (t_f, rms)
            if np.isfinite(sig):
                anchor_sigmas.append(sig)

    def datasets(net: FocusNet, cams: list[int]) -> tuple[list[Dataset], list[dict]]:
        """This epoch's labelled frames of cameras ``cams`` and their label statistics."""
        parts, infos = [], []
        for k in cams:
            fr = frames_list[k]
            if fixed_labels is not None:
                lab, info = fixed_labels[k], _label_agreement(net, fr, fixed_labels[k])
            else:
                lab, info = pseudo_labels(
                    net, fr, eefs[k], template, cfg.s_prior_um_per_degC, cfg.anchor, anchors[k]
                )
            ok = np.isfinite(lab)
            parts.append(
                ArrayFocusDataset(
                    network_stamps(fr)[ok],
                    fr.field_theta_deg[ok],
                    fr.field_phi_deg[ok],
                    lab[ok],
                    np.full(ok.sum(), k),
                )  # fmt: skip
            )
            infos.append(info)
        parts += [resim[k][0] for k in cams if k in resim]
        variants = [resim[k][1] for k in cams if k in resim and resim[k][1] is not None]
        n_other = sum(len(p) for p in parts)
        return parts + _variant_subset(variants, n_other, cfg.variant_share, variant_rng), infos

    all_cams = list(range(len(frames_list)))
    drop = ("architecture", "plateau_head", "bootstrap_scale", "without_plateau_head")
    meta = {k: v for k, v in desc.raw.items() if k not in drop and k != "systematic_sigma_degC"}
    cv = None
    if physics and cfg.cv_sigma and len(frames_list) >= 3:
        cv = _cross_validated_errors(base, frames_list, reports, meta, cfg, synthetic, datasets)
    history, before = _train(model, all_cams, datasets, cfg, synthetic, progress)
    model.eval()
    if fixed_labels is not None:
        after = [
            _label_agreement(model, fr, lab)
            for fr, lab in zip(frames_list, fixed_labels, strict=True)
        ]
    else:
        after = [
            pseudo_labels(
                model, fr, eefs[k], template, cfg.s_prior_um_per_degC, cfg.anchor, anchors[k]
            )[1]
            for k, fr in enumerate(frames_list)
        ]
    # the plateau head was trained on the base network's outputs: it does not describe the
    # fine-tuned one, which therefore has none (plato_cnn.nn.plateau_head); the bootstrap scale
    # measured the simulator's spread of s, which says nothing of the cameras fine-tuned on
    meta["finetune"] = {
        "config": asdict(cfg),
        "base_model": str(base),
        "cameras": [fr.camera for fr in frames_list],
        "history": history,
        "before": before,
        "after": after,
    }
    if physics:
        meta["finetune"]["forward"] = [_report_summary(r) for r in reports]
    # The fine-tuned network's T_BF is tied to its anchors, whose uncertainty is the improved
    # classical sigma; the base model's calibration (the one without the plateau head, which
    # the fine-tuned model lacks), made in the simulator's population, cannot see how far a
    # real camera lies from it.  So the anchors' RMS sigma is added in quadrature.
    calib = desc.sigma_without_head or desc.sigma
    sys_table = calib.systematic_sigma_degC if calib else None
    if cv is not None:
        # measured on the family itself: each camera scored by a model fine-tuned without it
        meta["systematic_sigma_degC"] = {k: v["systematic_sigma_degC"] for k, v in cv.items()}
        meta["finetune"]["cross_validation"] = cv
    elif sys_table:
        a = float(np.sqrt(np.mean(np.square(anchor_sigmas)))) if anchor_sigmas else 0.0
        meta["systematic_sigma_degC"] = {k: float(np.hypot(v, a)) for k, v in sys_table.items()}
        meta["finetune"]["anchor_sigma_degC"] = a
    save_model(model, out_dir, meta)
    atomic_write_text(Path(out_dir) / "finetune.json", json.dumps(meta["finetune"], indent=2))
    return meta["finetune"]
