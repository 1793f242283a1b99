"""Fine-tune the field head on cameras like a few measured ones (``plato-cnn field-head-finetune``).

A test house that has measured a few cameras of a new family with the forward method
(:func:`plato_cnn.forward.forward_bft`, ``field_focus``: per field position its focal offset
and Z5..Z22, the chromatic shift, the diffusion) knows that family's optics far better than
any prior.  This pipeline turns each fitted camera into many cameras *like* it
(:func:`plato_cnn.resimulate.varied_camera`: quarter turns, mirror, each Noll term scaled,
the diffusion scaled), gives each a thermal response drawn from the head's own training prior
(``plato_cnn/data/field_head_dataset.yaml``: the four fitted responses are four draws, not a
family's range), images each through focus as a campaign (:func:`plato_cnn.resimulate.
resimulate_campaign`: ``plateaux`` foci spread over +-``focus_half_range_um`` around the
camera's best focus, as the training series are), and labels each field position with the
TRP1 at which that camera reaches the field's EEF-optimal focus, exactly, as the training
dataset does (``dz_field_best_um``: :func:`plato_sim.truth.bestfocus.field_best_focus_um`,
OGSE spectrum, the variant's own charge diffusion, as a training camera's labels are at the
floor of its diffusion spec).  The shipped head is then trained further on those
series, with an L2 pull towards its own weights (L2-SP) so that what it learnt on the broad
prior stays.  Given the fitted cameras' own campaigns (at least 3), its sigma is measured on
the family itself: each camera scored by a head fine-tuned on the variants of the others
(leave-one-camera-out, :func:`cross_validated_terms`), against its forward-fit T_BF.

The labels are physics labels: no real camera's T_BF is known to the pipeline; the real
campaigns enter only through their forward fits.  What the re-simulated series lack is what
the forward model lacks (an aberration outside Z5..Z22, the real detector beyond the
emulator's): docs/cnn.md section 7.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from plato_cnn.nn.card import default_model_dir, load_model
from plato_cnn.nn.field_head import (
    FAMILY_TUNED,
    default_field_head_dir,
    field_series,
    head_features,
    load_field_head,
    network_digest,
    save_field_head,
)
from plato_cnn.pipelines.field_head import (
    SeriesSet,
    dataset_series,
    draw_batch,
    draw_window,
    gaussian_nll,
)
from plato_sim.errors import DataError, ParameterError
from plato_sim.io.atomic import atomic_write_text
from plato_sim.scenes.design import DEFAULT_PLATEAUX_DEGC

log = logging.getLogger(__name__)

__all__ = [
    "FieldHeadFinetuneConfig",
    "cross_validated_terms",
    "finetune_field_head",
    "foci_degC",
    "own_series",
    "read_series",
    "subset_series",
    "tune_head",
    "tuning_sets",
    "variant_series",
]

#: The arrays of a :class:`~plato_cnn.pipelines.field_head.SeriesSet`, in its order.
SERIES_FIELDS = ("features", "temperature_degC", "t_best_degC", "camera_id")
#: Where a variant's foci lie (:class:`FieldHeadFinetuneConfig`, ``foci``).
FOCI_MODES = ("focus", "campaign")
#: How the fine-tuning's learning rate runs (:class:`FieldHeadFinetuneConfig`, ``lr_schedule``).
LR_SCHEDULES = ("constant", "cosine")
#: The head's training set: the variants' thermal responses are drawn from its prior.
FIELD_HEAD_DATASET = Path(__file__).resolve().parents[1] / "data" / "field_head_dataset.yaml"


@dataclass(frozen=True)
class FieldHeadFinetuneConfig:
    """Settings of :func:`finetune_field_head`.

    Attributes:
        variants: cameras like each fitted one.
        plateaux: foci per variant (the training series have 8).
        focus_half_range_um: the foci are spread over +- this around the variant's best
            focus (um of thermal focal shift; the training series: uniform in +-200).
        dithers: dithered frames per field position and focus (the training series: 4).
        steps, batch, lr: AdamW steps of ``batch`` series at ``lr``.
        lr_schedule: ``"constant"``, or ``"cosine"``: from ``lr`` down to 0 over the steps
            (the head's own training ends at a small rate; a trial, not adopted: docs/cnn.md
            section 7).
        l2sp: weight of the squared distance to the starting weights (per parameter, summed).
        seed: of the variants' draws and of the training.
        own_repeats: the fitted cameras' own series (their real frames, each field position
            labelled by the forward fit: :func:`own_series`) join the variants', each drawn as
            often as this many series (0: the variants alone).
        foci: where a variant's foci lie: ``"focus"``, spread over +-``focus_half_range_um``
            of thermal focal shift around its best focus (as the head's training series: the
            TRP1 span follows 1/s and the best focus sits in the middle); ``"campaign"``, as a
            test campaign's plateaux: spread over a TRP1 window of ``campaign_span_degC`` placed so
            that the variant's T_BF falls anywhere in it (uniform), whatever its ``s``.
        campaign_span_degC: TRP1 span of the ``"campaign"`` foci (degC; default the span of the test
            houses' usual plateaux, :data:`~plato_sim.scenes.design.DEFAULT_PLATEAUX_DEGC`).
        draw_window_degC, draw_window_fraction: the training steps read that fraction of
            the series within a TRP1 window of width uniform in ``draw_window_degC`` holding
            the field's best focus anywhere (:func:`~plato_cnn.pipelines.field_head.
            draw_batch`); ``None``: every series' states at random.
        rehearsal_dataset: the starting head's own training dataset (a dataset with the
            ``field_series`` section, docs/datasets.md), read as the head was trained: about
            ``rehearsal_fraction`` of every batch is drawn from its series, the rest from the
            variants' (and the cameras' own), so that the steps on a few cameras do not move
            the head away from the prior it learnt (rehearsal against forgetting; a trial,
            not adopted: docs/cnn.md section 7); ``None``: the variants alone.
    """

    variants: int = 24
    plateaux: int = 8
    focus_half_range_um: float = 200.0
    dithers: int = 4
    steps: int = 1500
    batch: int = 128
    lr: float = 3e-4
    l2sp: float = 1e-2
    seed: int = 0
    own_repeats: int = 0
    foci: str = "focus"
    campaign_span_degC: float = float(max(DEFAULT_PLATEAUX_DEGC) - min(DEFAULT_PLATEAUX_DEGC))
    draw_window_degC: tuple[float, float] | None = None
    draw_window_fraction: float = 0.5
    rehearsal_dataset: str | None = None
    rehearsal_fraction: float = 0.5
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.variants < 1 or self.plateaux < 2 or self.dithers < 1:
            raise ParameterError(
                "field head fine-tuning: variants >= 1, plateaux >= 2, dithers >= 1"
            )
        if self.steps < 1 or self.batch < 1 or not self.lr > 0 or self.l2sp < 0:
            raise ParameterError("field head fine-tuning: steps, batch >= 1, lr > 0, l2sp >= 0")
        if not self.focus_half_range_um > 0:
            raise ParameterError("field head fine-tuning: focus_half_range_um > 0")
        if self.own_repeats < 0:
            raise ParameterError("field head fine-tuning: own_repeats >= 0")
        if self.foci not in FOCI_MODES:
            raise ParameterError(f"field head fine-tuning: foci must be one of {FOCI_MODES}")
        if not self.campaign_span_degC > 0:
            raise ParameterError("field head fine-tuning: campaign_span_degC > 0")
        draw_window(self.draw_window_degC, self.draw_window_fraction, "field head fine-tuning")
        if not 0.0 < self.rehearsal_fraction < 1.0:
            raise ParameterError("field head fine-tuning: 0 < rehearsal_fraction < 1")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ParameterError(f"field head fine-tuning: lr_schedule one of {LR_SCHEDULES}")


def tuning_sets(
    series: SeriesSet,
    own: SeriesSet | None,
    rehearsal: SeriesSet | None,
    cfg: FieldHeadFinetuneConfig,
) -> list[tuple[SeriesSet, int]]:
    """The ``(series, repeats)`` pairs that :func:`tune_head` draws from: the variants' series
    (once each), the cameras' own (``cfg.own_repeats`` each) and, with ``rehearsal`` (the
    starting head's training series), those once each with the others' repeats scaled so
    that they make up about ``1 - cfg.rehearsal_fraction`` of the draws."""
    sets = [(series, 1)] + ([(own, cfg.own_repeats)] if own is not None else [])
    if rehearsal is None:
        return sets
    tuned = sum(len(s.t_best_degC) * r for s, r in sets)
    scale = (1.0 - cfg.rehearsal_fraction) / cfg.rehearsal_fraction
    k = max(1, round(scale * len(rehearsal.t_best_degC) / max(tuned, 1)))
    return [(s, r * k) for s, r in sets] + [(rehearsal, 1)]


def _thermal_prior() -> tuple[object, object, float]:
    """The head's training prior on ``s`` and ``q`` (specs) and its focus reach (um)."""
    from plato_sim.scenes.sampling import focus_reach_um, load_config

    cfg = load_config(FIELD_HEAD_DATASET)
    c = cfg["cameras"]
    return c["s_um_per_degC"], c.get("q_um_per_degC2", 0.0), focus_reach_um(cfg)


def _variant(camera, rng: np.random.Generator):
    """A camera like ``camera`` with a thermal response from the head's training prior."""
    from plato_cnn.resimulate import varied_camera
    from plato_sim.detector import draw_value
    from plato_sim.optics.thermal import ThermalModel
    from plato_sim.scenes.sampling import reachable_q_um_per_degC2

    s_spec, q_spec, reach = _thermal_prior()
    s = float(draw_value(rng, s_spec, "cameras.s_um_per_degC"))
    q = float(draw_value(rng, q_spec, "cameras.q_um_per_degC2")) if q_spec else 0.0
    q = reachable_q_um_per_degC2(q, s, reach)  # clipped as the dataset clips it
    cam = varied_camera(camera, rng)
    return replace(cam, thermal=ThermalModel(s_um_per_degC=s, t0_degC=cam.thermal.t0_degC,
                                             q_um_per_degC2=q))  # fmt: skip


def foci_degC(report: dict, s: float, cfg: FieldHeadFinetuneConfig, rng) -> tuple[float, ...]:
    """``cfg.plateaux`` TRP1 (degC, to 0.1) over the focus range (``cfg.foci``): one in the
    middle 70 % of each of as many equal bins, so that no two fall within the reader's 0.5 degC
    plateau tolerance (docs/campaign-format.md) and the range is covered evenly."""
    if cfg.foci == "campaign":  # a test design's window, the T_BF anywhere in it
        span = cfg.campaign_span_degC
        first = -span * float(rng.uniform())
    else:  # +-focus_half_range_um of focal shift around the best focus
        span = 2.0 * cfg.focus_half_range_um / abs(s)
        first = -0.5 * span
    width = span / cfg.plateaux
    lo = first + width * np.arange(cfg.plateaux)
    t = lo + width * rng.uniform(0.15, 0.85, cfg.plateaux) + float(report["bft_degC"])
    return tuple(float(v) for v in np.round(t, 1))


def _field_labels_degC(camera) -> np.ndarray:
    """Per field position of ``camera``'s table, the TRP1 (degC) at which it reaches the
    position's EEF-optimal focus, as the training dataset labels it (``dz_field_best_um``:
    OGSE spectrum, the camera's own diffusion: the floor of a training camera's spec)."""
    from plato_sim.optics.spectra import ogse_spectrum
    from plato_sim.truth.bestfocus import field_best_focus_um

    best, _ = field_best_focus_um(
        camera.optics, np.asarray(camera.optics.theta_deg), np.asarray(camera.optics.phi_deg),
        spectrum=ogse_spectrum(camera.optics.camera), engine=camera.engine(),
    )  # fmt: skip
    return np.asarray(camera.thermal.temperature_degC(best), float)


def read_series(frames, net, device: str, moments: int = 0):
    """The frames' per-field through-focus series as ``net`` reads them (:func:`~plato_cnn.nn.
    field_head.field_series` of their :func:`~plato_cnn.nn.field_head.head_features`, with
    the image moments for a head that reads them)."""
    from plato_cnn.predict import network_stamps

    feats = head_features(
        net, network_stamps(frames), frames.field_theta_deg, frames.field_phi_deg,
        moments=moments, device=device,
    )  # fmt: skip
    return field_series(feats, frames.field_id, frames.obsid, frames.temperature_degC,
                        frames.field_theta_deg, frames.field_phi_deg)  # fmt: skip


def _series_of(
    folder: Path, camera, t_f: np.ndarray, net, device: str, moments: int = 0
) -> tuple[np.ndarray, ...]:
    """The variant campaign's series (features, TRP1) and each position's label T_f (degC,
    ``t_f`` per position of ``camera``'s table); positions some focus lost are left out."""
    from plato_cnn.reader import read_campaign

    fr = read_campaign(folder)
    ser = read_series(fr.select(fr.usable), net, device, moments)
    keep = ser.mask.all(axis=1)
    k = camera.optics.field_index(ser.theta_deg[keep], ser.phi_deg[keep])
    return ser.features[keep], ser.temperature_degC[keep], t_f[k]


def _image_variant(job: dict) -> dict:
    """Emulate one variant's through-focus campaign (a worker job; kept under its folder)."""
    from plato_cnn.resimulate import fitted_camera, resimulate_campaign
    from plato_sim.workers import pin_one_thread

    pin_one_thread()
    cfg, rep, c, v = job["cfg"], job["report"], job["camera"], job["variant"]
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, c, v]))
    cam = _variant(fitted_camera(rep, camera_id=c), rng)
    foci = foci_degC(rep, cam.thermal.s_um_per_degC, cfg, rng)
    seed = int(rng.integers(2**31))
    # the folder is named by everything drawn, so that a kept campaign is never read back
    # for a camera other than the one it images
    what = json.dumps([cam.to_dict(), foci, seed, cfg.dithers, rep["bft_degC"]], sort_keys=True)
    tag = hashlib.sha256(what.encode("utf-8")).hexdigest()[:12]
    folder = str(Path(job["workdir"]) / f"cam{c:02d}_v{v:03d}_{tag}")
    emulated, _ = resimulate_campaign(
        rep, folder, foci, n_dithers=cfg.dithers, frames_per_dither=1, seed=seed,
        n_sub_truth=4, camera_name=f"variant{c}x{v}", camera=cam,
    )  # fmt: skip
    # the labels (a refined best-focus search per position, ~2 s a variant) are kept beside
    # the campaign, under the same name, for the same camera
    kept = Path(f"{folder}.labels.json")
    if kept.is_file():
        t_f = np.asarray(json.loads(kept.read_text("utf-8"))["t_best_degC"], float)
    else:
        t_f = _field_labels_degC(emulated)
        atomic_write_text(kept, json.dumps({"t_best_degC": t_f.tolist()}))
    return {"folder": folder, "camera": emulated, "index": c, "t_f": t_f}


def variant_series(
    reports: list[dict],
    workdir: str | Path,
    model_dir: str | Path | None = None,
    cfg: FieldHeadFinetuneConfig | None = None,
    device: str = "cpu",
    workers: int = 1,
    moments: int = 0,
) -> SeriesSet:
    """Through-focus series of ``cfg.variants`` cameras like each fitted one, imaged as
    campaigns under ``workdir`` (kept: a rerun reads them back; ``workers`` processes) and
    read by the FocusNet of ``model_dir`` (with the image moments: ``moments``).
    ``camera_id`` of a series is the index of its fitted camera.  Each variant draws from
    its own stream ``(seed, camera, variant)``."""
    from plato_sim.workers import map_jobs

    cfg = cfg or FieldHeadFinetuneConfig()
    jobs = [
        dict(cfg=cfg, report=rep, camera=c, variant=v, workdir=str(workdir))
        for c, rep in enumerate(reports)
        for v in range(cfg.variants)
    ]
    imaged = map_jobs(_image_variant, jobs, workers, desc="field head variants")
    net, _ = load_model(model_dir or default_model_dir(), device)
    feats, temps, tbest, cids = [], [], [], []
    for im in imaged:
        f, t, y = _series_of(Path(im["folder"]), im["camera"], im["t_f"], net, device, moments)
        if f.shape[1] != cfg.plateaux or len(y) == 0:
            log.warning("%s: %d of %d foci read: left out", im["folder"], f.shape[1], cfg.plateaux)
            continue
        feats.append(f), temps.append(t), tbest.append(y), cids.append(np.full(len(y), im["index"]))
    if not feats:
        raise DataError("field head fine-tuning: no variant campaign could be read")
    return SeriesSet(
        features=np.concatenate(feats).astype(np.float32),
        temperature_degC=np.concatenate(temps),
        t_best_degC=np.concatenate(tbest),
        camera_id=np.concatenate(cids),
    )


def _draw(
    sets: list[tuple[SeriesSet, int]], batch: int, rng: np.random.Generator, window=None
) -> tuple:
    """A batch from ``(series, repeats)`` pairs: each series drawn as often as ``repeats``
    (:func:`~plato_cnn.pipelines.field_head.draw_batch` per set, with its ``window``; plateau
    axes padded)."""
    sets = [(s, r) for s, r in sets if r > 0 and len(s.t_best_degC)]
    if len(sets) == 1 and sets[0][1] == 1:  # the variants alone
        s = sets[0][0]
        return draw_batch(s, rng.integers(0, len(s.t_best_degC), batch), rng, window)
    sizes = np.asarray([len(s.t_best_degC) * r for s, r in sets])
    edges = np.concatenate([[0], np.cumsum(sizes)])
    pick = rng.integers(0, edges[-1], batch)
    parts = []
    for i, (s, _) in enumerate(sets):
        sel = pick[(pick >= edges[i]) & (pick < edges[i + 1])] - edges[i]
        if len(sel):
            parts.append(draw_batch(s, sel % len(s.t_best_degC), rng, window))
    top = max(p[0].shape[1] for p in parts)

    def pad(a: torch.Tensor) -> torch.Tensor:
        width = [0, 0] * (a.dim() - 2) + [0, top - a.shape[1]]
        return torch.nn.functional.pad(a, width)

    x, dt, mask = (torch.cat([pad(p[k]) for p in parts]) for k in range(3))
    return x, dt, mask, torch.cat([p[3] for p in parts]), np.concatenate([p[4] for p in parts])


def tune_head(head, sets: list[tuple[SeriesSet, int]], cfg: FieldHeadFinetuneConfig) -> list[float]:
    """AdamW steps on ``(series, repeats)`` pairs (:func:`_draw`) with the L2-SP pull;
    returns the loss every 100 steps."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    window = draw_window(cfg.draw_window_degC, cfg.draw_window_fraction, "field head fine-tuning")
    ref = {k: v.detach().clone() for k, v in head.named_parameters()}
    opt = torch.optim.AdamW(head.parameters(), cfg.lr, weight_decay=0.0)
    sched = None
    if cfg.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    losses = []
    head.train()
    for step in range(cfg.steps):
        x, dt, mask, y, _ = _draw(sets, cfg.batch, rng, window)
        loss = gaussian_nll(head(x, dt, mask), y)
        pull = sum(((p - ref[k]) ** 2).sum() for k, p in head.named_parameters())
        opt.zero_grad()
        (loss + cfg.l2sp * pull).backward()
        opt.step()
        if sched is not None:
            sched.step()
        if step % 100 == 0:
            losses.append(round(loss.item(), 4))
    head.eval()
    return losses


def own_series(
    frames, report: dict, net, index: int, device: str = "cpu", moments: int = 0
) -> SeriesSet:
    """A fitted camera's own through-focus series: its frames read by ``net``, each field
    position labelled with the TRP1 of its EEF-optimal focus under the forward fit (the
    report's ``field_focus["t_best_degC"]``, made with ``field_focus=True``); ``camera_id``
    is ``index``.  Positions some plateau lost, or not in the fit's table, are left out."""
    from plato_cnn.forward import field_distance_deg

    ff = report.get("field_focus") or {}
    if "t_best_degC" not in ff:
        raise ParameterError(
            "the forward report has no field_focus block: fit with field_focus=True "
            "(plato-cnn bft --method forward --field-focus)"
        )
    ser = read_series(frames, net, device, moments)
    d = field_distance_deg(np.asarray(ff["theta_deg"]), np.asarray(ff["phi_deg"]), ser.theta_deg,
                           ser.phi_deg)  # fmt: skip
    k = np.argmin(d, axis=1)
    keep = ser.mask.all(axis=1) & (d[np.arange(len(k)), k] < 1e-3)
    return SeriesSet(
        features=ser.features[keep].astype(np.float32),
        temperature_degC=ser.temperature_degC[keep],
        t_best_degC=np.asarray(ff["t_best_degC"], float)[k[keep]],
        camera_id=np.full(int(keep.sum()), index),
    )


def subset_series(series: SeriesSet, keep: np.ndarray) -> SeriesSet:
    """The series of ``series`` where ``keep`` (bool, one per series) holds."""
    return SeriesSet(*(getattr(series, f)[keep] for f in SERIES_FIELDS))


def _held_out_errors(fr, feats: np.ndarray, head, bft_degC: float) -> dict[str, tuple]:
    """Per plateau subset of the campaign ``fr`` (:func:`~plato_cnn.pipelines.calibrate.
    plateau_subset_masks`: 5, 3, 2 and 1 of its plateaux, as many as it holds): ``(head's
    T_BF - bft_degC, statistical sigma, 0)`` (degC)."""
    from plato_cnn.field_bft import estimate_from_features
    from plato_cnn.pipelines.calibrate import plateau_subset_masks

    out = {}
    for k, m in plateau_subset_masks(fr).items():
        try:
            est = estimate_from_features(fr.select(m), feats[m], head)
        except (ValueError, DataError) as exc:  # this campaign cannot give that subset
            log.info("field head cross-validation: %d plateaux skipped: %s", k, exc)
            continue
        out[str(k)] = (est["bft_degC"] - bft_degC, est["sigma_stat_degC"], 0.0)
    return out


def cross_validated_terms(
    start_dir: str | Path,
    digest: str,
    series: SeriesSet,
    frames_list: list,
    reports: list[dict],
    cfg: FieldHeadFinetuneConfig,
    model_dir: str | Path | None = None,
    device: str = "cpu",
    own: SeriesSet | None = None,
    rehearsal: SeriesSet | None = None,
) -> dict[str, dict]:
    """Leave-one-camera-out on the fine-tuning cameras: for each, the head of ``start_dir``
    fine-tuned on the variants of the *other* cameras only (``series``, ``camera_id`` = index
    in ``reports``; and their own series ``own`` where ``cfg.own_repeats``; with the
    ``rehearsal`` series as the final fine-tuning has them, :func:`tuning_sets`), scored on that
    camera's own frames (``frames_list``) with 5, 3, 2 and 1 of its plateaux
    (:func:`_held_out_errors`), against its forward-fit T_BF (the label source; ~0.003 degC
    with 5 plateaux, docs/forward.md).  Per plateau count, the systematic term is the
    quadrature RMS ``sqrt(max(0, mean(e_i^2 - sigma_i^2)))`` of the errors beyond their
    statistical sigma: with a handful of cameras the RMS is the efficient estimate of the
    errors' scale, where the 68th percentile that calibrations over tens of cameras use
    (:func:`~plato_cnn.pipelines.calibrate_forward.systematic_from_errors`, kept as
    ``quantile_68_degC``) would rest on one or two of them.  What it measures is the error on
    a camera of the family that the variants did not come from: the fine-tuned head's case on
    the next camera, with one camera fewer to learn from (so, if anything, pessimistic)."""
    from plato_cnn.field_bft import field_head_inputs
    from plato_cnn.pipelines.calibrate_forward import systematic_from_errors

    if len(frames_list) != len(reports):
        raise ParameterError(
            f"{len(frames_list)} campaigns for {len(reports)} forward reports: one per camera"
        )
    per_cam = []
    for j, fr in enumerate(frames_list):
        keep = series.camera_id != j
        if not keep.any():
            raise ParameterError("field head cross-validation: no variant of another camera")
        log.info("field head cross-validation: camera %d/%d held out", j + 1, len(frames_list))
        head, _ = load_field_head(start_dir, digest)
        mine = None if own is None else subset_series(own, own.camera_id != j)
        tune_head(head, tuning_sets(subset_series(series, keep), mine, rehearsal, cfg), cfg)
        _, _, _, feats = field_head_inputs(fr, model_dir, start_dir, device)
        per_cam.append(_held_out_errors(fr, feats, head, float(reports[j]["bft_degC"])))
    keys = [k for k in per_cam[0] if all(k in c for c in per_cam)]
    table = systematic_from_errors(per_cam, keys)
    for k, v in table.items():
        e = np.asarray([c[k][0] for c in per_cam])
        stat = np.asarray([c[k][1] for c in per_cam])
        term = float(np.sqrt(max(0.0, float(np.mean(e**2 - stat**2)))))
        v.pop("mean_wall_s", None)
        v["quantile_68_degC"] = v["systematic_sigma_degC"]
        v["systematic_sigma_degC"] = term
        v["coverage"] = float(np.mean(np.abs(e) <= np.hypot(stat, term) * (1 + 1e-9)))
        v["errors_degC"] = e.tolist()
        v["stat_sigma_degC"] = stat.tolist()
    return table


# Long because: one sequence (variants, the held-out fine-tunings, the final fine-tuning,
# the card) whose steps share the starting head, its card and the timings of the summary.
def finetune_field_head(
    reports: list[dict],
    out_dir: str | Path,
    workdir: str | Path,
    head_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
    cfg: FieldHeadFinetuneConfig | None = None,
    device: str = "cpu",
    workers: int = 1,
    frames_list: list | None = None,
) -> dict:
    """Fine-tune the field head of ``head_dir`` (default: the shipped one) on cameras like
    the forward-fitted ones of ``reports`` and write it to ``out_dir`` with its card.  Returns
    the summary (also in the card's ``finetune``).

    With ``frames_list`` (the fitted cameras' own usable frames, one per report, at least 3),
    the head's systematic terms are measured on the family itself, leave-one-camera-out
    (:func:`cross_validated_terms`); without it, the starting head's are kept until
    :func:`~plato_cnn.pipelines.field_head.calibrate_field_head` measures new ones.  The
    starting head's out-of-family term is dropped either way: it was measured for that head.
    """
    cfg = cfg or FieldHeadFinetuneConfig()
    if not reports:
        raise ParameterError("field head fine-tuning: no forward report")
    if frames_list is not None and len(frames_list) < 3:
        raise ParameterError(
            "field head fine-tuning: the cross-validated sigma needs at least 3 campaigns"
        )
    if cfg.own_repeats and frames_list is None:
        raise ParameterError("field head fine-tuning: own_repeats needs the cameras' campaigns")
    t0 = time.perf_counter()
    model_dir = model_dir or default_model_dir()
    start = head_dir or default_field_head_dir()
    digest = network_digest(model_dir)
    head, card = load_field_head(start, digest)
    moments = head.config.moments
    series = variant_series(reports, workdir, model_dir, cfg, device, workers, moments)
    own = rehearsal = None
    if cfg.own_repeats or cfg.rehearsal_dataset is not None:
        net, _ = load_model(model_dir, device)
    if cfg.own_repeats:
        parts = [own_series(fr, r, net, k, device, moments)
                 for k, (fr, r) in enumerate(zip(frames_list, reports, strict=True))]  # fmt: skip
        own = SeriesSet(*(np.concatenate([getattr(o, f) for o in parts]) for f in SERIES_FIELDS))
    if cfg.rehearsal_dataset is not None:
        rehearsal = dataset_series(cfg.rehearsal_dataset, net, device, moments)
    t_sim = time.perf_counter() - t0
    cv = None
    if frames_list is not None:
        cv = cross_validated_terms(start, digest, series, frames_list, reports, cfg, model_dir,
                                   device, own, rehearsal)  # fmt: skip
    t_cv = time.perf_counter() - t0 - t_sim
    losses = tune_head(head, tuning_sets(series, own, rehearsal, cfg), cfg)
    summary = {
        "config": asdict(cfg),
        "start_head": str(start),
        "cameras": [
            {"bft_degC": r["bft_degC"], "fields": len(r["wavefront"]), "chi2": r["chi2"]["reduced"]}
            for r in reports
        ],
        "n_series": int(len(series.t_best_degC)),
        "n_own_series": 0 if own is None else int(len(own.t_best_degC)),
        "n_rehearsal_series": 0 if rehearsal is None else int(len(rehearsal.t_best_degC)),
        "loss_every_100_steps": losses,
        "seconds_variants": round(t_sim, 1),
        "seconds_cross_validation": round(t_cv, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    if cv is not None:
        summary["cross_validation"] = cv
        # measured on the family itself: each camera scored by a head tuned without it
        card.systematic_sigma_degC = {k: v["systematic_sigma_degC"] for k, v in cv.items()}
        card.calibration = {"source": FAMILY_TUNED, "per_count": cv}
    card.training = {**card.training, "finetune": summary}
    # the starting head's out-of-family term was measured for it, not for this head
    card.family_sigma_degC, card.family_calibration = {}, {}
    save_field_head(head, card, out_dir)
    atomic_write_text(Path(out_dir) / "finetune_summary.json", json.dumps(summary, indent=1))
    log.info(
        "field head fine-tuned on %d series in %.0f s",
        summary["n_series"],
        summary["seconds_total"],
    )
    return summary
