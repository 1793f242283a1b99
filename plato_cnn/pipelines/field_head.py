"""Train and calibrate the field head (``plato-cnn field-head``; docs/cnn.md section 7).

Training data: a dataset made with a ``field_series`` section (through-focus series: runs of
``states_per_field`` optical states share a camera and field position,
``plato_cnn/data/field_head_dataset.yaml``).  Each state's samples are read by the frozen
FocusNet and their features averaged (a plateau's frames); a field's target is the TRP1 at
which its camera's thermal model reaches that field's EEF-optimal focus
(``dz_field_best_um``, the label every sample carries).  Every step draws, for each field of
the batch, 1 to 5 of its states (a random plateau set) and asks for its ``T_f`` relative to
their mean TRP1, with a Gaussian negative log-likelihood.  Cameras whose pool index is a
multiple of ``holdout_every`` are held out whole and scored at the end.

Calibration: the systematic term per plateau count (5, 3, 2, 1; the standard subsets of
:data:`plato_cnn.pipelines.calibrate.PLATEAU_SUBSETS`) is the 68.27th percentile over
calibration cameras of ``sqrt(max(0, error**2 - sigma_stat**2))``, so that ``|error| <=
sigma`` holds for 68 % of them, as for the CNN and forward estimates.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from plato_cnn.nn.card import default_model_dir, load_model
from plato_cnn.nn.field_head import (
    TEMPERATURE_SCALE_DEGC,
    FieldHead,
    FieldHeadCard,
    FieldHeadConfig,
    feature_dim,
    head_features,
    load_field_head,
    network_digest,
    save_field_head,
)
from plato_cnn.nn.stamp_moments import moment_count
from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS
from plato_sim.errors import DataError, ParameterError
from plato_sim.io.store import read_shard
from plato_sim.scenes.sampling import CameraEntry

log = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_FAMILIES",
    "FieldHeadTrainConfig",
    "SeriesSet",
    "calibrate_field_head",
    "calibration_campaigns",
    "dataset_series",
    "draw_batch",
    "draw_window",
    "gaussian_nll",
    "train_field_head",
]

#: largest plateau set drawn per training series
MAX_TRAIN_PLATEAUX = 5
#: families a calibration set may come from (``plato_sim.scenes.calibration_family``); the
#: nodal family scores and never calibrates
CALIBRATION_FAMILIES = ("design", "highorder", "highorder-mild")
#: the calibration sets ``(family, seed, cameras)`` of the shipped field head's terms and of
#: the improved classical fit's 3-plateau shape term (docs/cnn.md section 7)
CALIBRATION_SETS = (("highorder-mild", 0, 16), ("highorder", 0, 10), ("design", 1, 12))


@dataclass(frozen=True)
class FieldHeadTrainConfig:
    """Training settings (steps of ``batch`` series, one-cycle ``lr``, AdamW).

    ``window_degC = (lo, hi)``: a ``window_fraction`` of the series of each batch are read
    within a TRP1 window of width uniform in ``lo``-``hi`` degC that holds the field's best
    focus anywhere, as a test campaign's plateaux do (:func:`draw_batch`); ``None``: every
    series' states drawn at random.  ``moments``: the head also reads each stamp's image
    moments of that set (:mod:`plato_cnn.nn.stamp_moments`; 0: none)."""

    steps: int = 48_000
    batch: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden: int = 96
    seed: int = 0
    holdout_every: int = 10
    window_degC: tuple[float, float] | None = None
    window_fraction: float = 0.5
    moments: int = 0


@dataclass(frozen=True)
class SeriesSet:
    """Through-focus series of a dataset: ``features (F, K, D)`` (mean per state),
    ``temperature_degC (F, K)``, ``t_best_degC (F,)`` (the field's best-focus TRP1) and
    ``camera_id (F,)``."""

    features: np.ndarray
    temperature_degC: np.ndarray
    t_best_degC: np.ndarray
    camera_id: np.ndarray


def _manifest(dataset: Path) -> dict:
    try:
        return json.loads((dataset / "manifest.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{dataset}: no readable dataset manifest ({exc})") from exc


# Long because: one pass over the shards that keeps only the per-state means (the stamps of
# a 400k-sample dataset would not fit beside them), with the checks that name what is wrong.
def dataset_series(dataset: str | Path, net, device: str = "cpu", moments: int = 0) -> SeriesSet:
    """The through-focus series of a ``field_series`` dataset as read by ``net`` (with the
    stamps' image moments: ``moments``, :func:`plato_cnn.nn.field_head.head_features`)."""
    root = Path(dataset)
    man = _manifest(root)
    cfg = man["config"]
    if "field_series" not in cfg:
        raise DataError(f"{root}: not a through-focus dataset (its config has no field_series)")
    per_field = int(cfg["field_series"]["states_per_field"])
    if per_field < 2:
        raise DataError(f"{root}: states_per_field {per_field}: a series needs at least 2 foci")
    pool = json.loads((root / "cameras.json").read_text("utf-8"))
    cams = {c.camera_id: c for c in (CameraEntry.from_dict(d) for d in pool)}
    thermal = {}
    feats, temps, tbest, cids = [], [], [], []
    for shard in sorted(root.glob("shard-*.h5")):
        stamps, lab, _ = read_shard(shard)
        f = head_features(net, stamps, lab["theta_deg"], lab["phi_deg"], moments, device)
        state = lab["optical_state"].astype(np.int64)
        n_state = int(state.max()) + 1
        cnt = np.bincount(state, minlength=n_state).astype(float)
        fs = np.zeros((n_state, f.shape[1]))
        np.add.at(fs, state, f)
        fs /= cnt[:, None]
        first = np.array([np.flatnonzero(state == s)[0] for s in range(n_state)])
        n_full = n_state // per_field
        k = n_full * per_field
        if n_full == 0:
            continue
        feats.append(fs[:k].reshape(n_full, per_field, -1))
        temps.append(lab["temperature_degC"][first][:k].reshape(n_full, per_field))
        lead = lab[first[:k:per_field]]
        for r in lead:
            cid = int(r["camera_id"])
            if cid not in thermal:
                thermal[cid] = cams[cid].model().thermal
            tbest.append(float(thermal[cid].temperature_degC(float(r["dz_field_best_um"]))))
            cids.append(cid)
        log.info("%s: %d series", shard.name, n_full)
    if not feats:
        raise DataError(f"{root}: no complete through-focus series")
    return SeriesSet(
        features=np.concatenate(feats).astype(np.float32),
        temperature_degC=np.concatenate(temps),
        t_best_degC=np.asarray(tbest),
        camera_id=np.asarray(cids),
    )


def _windowed(series: SeriesSet, idx: np.ndarray, rng: np.random.Generator, top: int,
              window: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The states' order and counts of :func:`draw_batch` where some series are read as a test
    campaign reads a camera: a TRP1 window of a random width with the field's best focus
    anywhere in it, 1-5 of the states inside it (the nearest one if none is)."""
    lo, hi, fraction = window
    b, k = len(idx), series.features.shape[1]
    t = series.temperature_degC[idx]
    width = rng.uniform(lo, hi, b)
    start = series.t_best_degC[idx] - width * rng.uniform(size=b)
    inside = (t >= start[:, None]) & (t <= (start + width)[:, None])
    windowed = rng.uniform(size=b) < fraction
    inside[~windowed] = True  # the other series: any of their states, as without a window
    centre = (start + 0.5 * width)[:, None]
    # states inside first (in random order), then the nearest to the window's centre
    key = np.where(inside, rng.random((b, k)), 2.0 + np.abs(t - centre) / 1e3)
    pick = np.argsort(key, axis=1)[:, :top]
    avail = np.clip(inside.sum(1), 1, top)
    return pick, 1 + np.floor(rng.uniform(size=b) * avail).astype(np.int64)


def draw_window(
    window_degC: tuple[float, float] | None, fraction: float, what: str
) -> tuple[float, float, float] | None:
    """The ``window`` of :func:`draw_batch` for a ``(lo, hi)`` width range (degC) and the
    fraction of series read in it (``None`` without a range).

    Raises:
        ParameterError: not ``0 < lo <= hi`` or a fraction outside 0-1 (``what`` names the
            caller).
    """
    if window_degC is None:
        return None
    lo, hi = (float(v) for v in window_degC)
    if not (0 < lo <= hi and 0 <= fraction <= 1):
        raise ParameterError(f"{what}: window needs 0 < lo <= hi (degC) and a fraction in 0-1")
    return lo, hi, float(fraction)


def draw_batch(
    series: SeriesSet,
    idx: np.ndarray,
    rng: np.random.Generator,
    window: tuple[float, float, float] | None = None,
) -> tuple:
    """A training batch: for each series of ``idx`` a random set of 1-5 of its states.

    With ``window = (lo, hi, fraction)`` (degC, degC, 0-1), a ``fraction`` of the series are
    read as a test campaign would: only states within a TRP1 window of width uniform in
    ``lo``-``hi`` that holds the field's best focus anywhere (:func:`_windowed`).  The
    dataset's foci are spread in um around each field's best focus, so that its series always
    bracket the focus evenly over a TRP1 span that follows 1/s; a campaign's plateaux are set
    in degC before the best focus is known.

    Returns ``(features, dT, mask, target, n)``: tensors for :class:`FieldHead` (``dT`` and the
    target, the field's best-focus TRP1, relative to the drawn states' mean TRP1 in units of
    ``TEMPERATURE_SCALE_DEGC``) and the number of states drawn per series."""
    b, k = len(idx), series.features.shape[1]
    top = min(MAX_TRAIN_PLATEAUX, k)
    if window is None:  # the draws of every head trained before windows
        n = rng.integers(1, top + 1, b)
        pick = np.argsort(rng.random((b, k)), axis=1)[:, :top]
    else:
        pick, n = _windowed(series, idx, rng, top, window)
    mask = np.arange(top)[None] < n[:, None]
    x = series.features[idx[:, None], pick]
    t = series.temperature_degC[idx[:, None], pick]
    tbar = (t * mask).sum(1) / mask.sum(1)
    y = (series.t_best_degC[idx] - tbar) / TEMPERATURE_SCALE_DEGC
    dt = (t - tbar[:, None]) / TEMPERATURE_SCALE_DEGC
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return as_t(x), as_t(dt), torch.as_tensor(mask), as_t(y), n


def gaussian_nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood of ``y`` under the head's ``(mean, log sigma)``."""
    return (0.5 * ((y - out[:, 0]) / out[:, 1].exp()) ** 2 + out[:, 1]).mean()


@torch.no_grad()
def _holdout_rmse(head: FieldHead, series: SeriesSet, idx: np.ndarray, seed: int) -> dict:
    """Per-field RMS error (degC) on held-out series, by plateau count (4 draws each)."""
    head.eval()
    x, dt, mask, y, n = draw_batch(series, np.repeat(idx, 4), np.random.default_rng(seed))
    err = (head(x, dt, mask)[:, 0] - y).numpy() * TEMPERATURE_SCALE_DEGC
    return {str(k): float(np.sqrt(np.mean(err[n == k] ** 2))) for k in np.unique(n)}


def train_field_head(
    dataset: str | Path,
    out_dir: str | Path,
    model_dir: str | Path | None = None,
    cfg: FieldHeadTrainConfig | None = None,
    device: str = "cpu",
) -> dict:
    """Train a field head on ``dataset`` for the FocusNet of ``model_dir`` (default: the
    shipped one) and write it to ``out_dir`` (uncalibrated: see :func:`calibrate_field_head`).
    Returns the training summary (also in the card's ``training``)."""
    cfg = cfg or FieldHeadTrainConfig()
    if cfg.steps < 1 or cfg.batch < 1 or cfg.holdout_every < 2:
        raise ParameterError("field head training: steps and batch >= 1, holdout_every >= 2")
    window = draw_window(cfg.window_degC, cfg.window_fraction, "field head training")
    n_moments = moment_count(cfg.moments)  # a bad set refused before the reading
    t0 = time.perf_counter()
    model_dir = model_dir or default_model_dir()
    net, _ = load_model(model_dir, device)
    series = dataset_series(dataset, net, device, cfg.moments)
    t_feat = time.perf_counter() - t0
    held = series.camera_id % cfg.holdout_every == 0
    train, hold = np.flatnonzero(~held), np.flatnonzero(held)
    if len(train) == 0 or len(hold) == 0:
        raise DataError(f"{dataset}: too few cameras to hold one in {cfg.holdout_every} out")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dim = feature_dim(net) + n_moments
    head = FieldHead(FieldHeadConfig(feature_dim=dim, hidden=cfg.hidden, moments=cfg.moments))
    flat = series.features[train].reshape(-1, series.features.shape[-1])
    head.feature_mean.copy_(torch.as_tensor(flat.mean(0)))
    head.feature_std.copy_(torch.as_tensor(flat.std(0) + 1e-6))
    opt = torch.optim.AdamW(head.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    head.train()
    for step in range(cfg.steps):
        x, dt, mask, y, _ = draw_batch(series, rng.choice(train, cfg.batch), rng, window)
        loss = gaussian_nll(head(x, dt, mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 2000 == 0:
            log.info("field head step %d: loss %.3f", step, loss.item())
    rmse = _holdout_rmse(head, series, hold, cfg.seed + 1)
    summary = {
        "config": asdict(cfg),
        "dataset": str(dataset),
        "dataset_seed": _manifest(Path(dataset)).get("seed"),
        "n_series": int(len(series.t_best_degC)),
        "n_train_series": int(len(train)),
        "n_holdout_series": int(len(hold)),
        "holdout_cameras": int(len(np.unique(series.camera_id[hold]))),
        "holdout_rmse_per_field_degC": rmse,
        "seconds_features": round(t_feat, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    log.info("field head: held-out per-field RMSE by plateau count %s", rmse)
    hcard = FieldHeadCard(
        config={}, base_weights_sha256=network_digest(model_dir), training=summary
    )
    save_field_head(head, hcard, out_dir)
    return summary


def _head_errors(
    head_dir: str | Path,
    campaigns: list[tuple[str, float]],
    model_dir: str | Path | None,
    device: str,
    with_systematic: bool,
) -> list[dict]:
    """Per camera of ``(campaign folder, true T_BF)``, per plateau count of
    :data:`PLATEAU_SUBSETS`: ``(error, sigma, wall s)`` of the head's estimate (degC), sigma
    the statistical one or, ``with_systematic``, the head's full in-family sigma."""
    from plato_cnn.field_bft import estimate_from_features, field_head_inputs
    from plato_cnn.reader import read_campaign

    per_cam = []
    for folder, truth in campaigns:
        frames = read_campaign(folder)
        frames = frames.select(frames.usable)
        head, hcard, _, feats = field_head_inputs(frames, model_dir, head_dir, device)
        sys_for = hcard.systematic_for if with_systematic else None
        errors = {}
        for k, temps in PLATEAU_SUBSETS.items():
            t0 = time.perf_counter()
            m = frames.plateau_mask(temps)
            r = estimate_from_features(frames.select(m), feats[m], head, sys_for)
            sigma = r["sigma_degC"] if with_systematic else r["sigma_stat_degC"]
            errors[str(k)] = (r["bft_degC"] - truth, sigma, time.perf_counter() - t0)
        per_cam.append(errors)
        log.info("%s: errors %s", folder, {k: round(v[0], 3) for k, v in errors.items()})
    return per_cam


def _per_count(per_cam: list[dict], stats: dict) -> dict:
    """The statistics per plateau count with each camera's error (degC) beside them."""
    return {k: {**v, "errors_degC": [c[k][0] for c in per_cam]} for k, v in stats.items()}


def _store_terms(head_dir, terms: str, block_key: str, stats: dict, block: dict) -> None:
    """Write a measured term per plateau count (card attribute ``terms``) and its record
    (``block_key``) into the card of the head in ``head_dir``."""
    head, card = load_field_head(head_dir)
    setattr(card, terms, {k: v["systematic_sigma_degC"] for k, v in stats.items()})
    setattr(card, block_key, block)
    save_field_head(head, card, head_dir)


def calibrate_field_head(
    head_dir: str | Path,
    campaigns: list[tuple[str, float]],
    model_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict:
    """Measure the head's systematic term on ``(campaign folder, true T_BF)`` pairs (cameras
    of calibration families; never a scored family) and write it into the head's card.
    Returns the calibration block (per plateau count: the term, the errors, the coverage)."""
    from plato_cnn.pipelines.calibrate_forward import systematic_from_errors

    if not campaigns:
        raise ParameterError("calibrate_field_head: no calibration campaign")
    per_cam = _head_errors(head_dir, campaigns, model_dir, device, with_systematic=False)
    stats = systematic_from_errors(per_cam)
    block = {"campaigns": [str(f) for f, _ in campaigns], "per_count": _per_count(per_cam, stats)}
    _store_terms(head_dir, "systematic_sigma_degC", "calibration", stats, block)
    return block


def measure_family_term(
    head_dir: str | Path,
    reference_dir: str | Path,
    held_out: list[tuple[str, float]],
    model_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict:
    """Measure what a family the network has never seen costs a field head, and write it into
    ``head_dir``'s card as its out-of-family term (``family_sigma_degC``).

    ``reference_dir`` is a head trained and calibrated like ``head_dir`` but without the
    family of the ``held_out`` cameras (``(campaign folder, true T_BF)``; e.g. a head trained
    on design cameras only, ``plato_cnn/data/field_head_dataset_design_only.yaml``, and the
    high-order calibration cameras): per plateau count, the term is the 68.27th percentile of
    ``sqrt(max(0, e^2 - sigma^2))`` over those cameras, ``sigma`` the reference head's full
    in-family sigma, i.e. what its sigma lacks to cover 68 % of a family it did not know.
    Returns the block written (``family_calibration``)."""
    from plato_cnn.pipelines.calibrate_forward import systematic_from_errors

    if not held_out:
        raise ParameterError("measure_family_term: no held-out campaign")
    _, ref_card = load_field_head(reference_dir)
    if not ref_card.systematic_sigma_degC:
        raise ParameterError(
            f"{reference_dir}: the reference head has no in-family calibration (plato-cnn "
            "field-head --calibrate)"
        )
    per_cam = _head_errors(reference_dir, held_out, model_dir, device, with_systematic=True)
    stats = systematic_from_errors(per_cam)
    block = {
        "reference_head": str(reference_dir),
        "reference_systematic_sigma_degC": ref_card.systematic_sigma_degC,
        "reference_training_dataset": ref_card.training.get("dataset"),
        "sigma_in_the_statistics": "the reference head's full in-family sigma (statistical "
        "and systematic): median_stat_sigma_degC and coverage_stat_only refer to it",
        "campaigns": [str(f) for f, _ in held_out],
        "per_count": _per_count(per_cam, stats),
    }
    _store_terms(head_dir, "family_sigma_degC", "family_calibration", stats, block)
    return block


def calibration_campaigns(
    cache: str | Path, sets: list[tuple[str, int, int]], workers: int = 1
) -> list[tuple[str, float]]:
    """Emulate (or reuse under ``cache``) the calibration sets ``(family, seed, cameras)``:
    campaigns with random test designs at the standard five plateaux, T_BF in the benchmarks'
    range.  Returns ``(folder, true T_BF)`` per camera."""
    from plato_cnn.pipelines.calibrate import TRUTH_RANGE_DEGC
    from plato_sim.scenes.calibration_family import emulate_calibration_family

    out = []
    for family, seed, n in sets:
        if family not in CALIBRATION_FAMILIES:
            raise ParameterError(
                f"calibration family {family!r}: allowed {', '.join(CALIBRATION_FAMILIES)}"
            )
        done = emulate_calibration_family(
            cache, n, seed=seed, bft_range_degC=TRUTH_RANGE_DEGC, workers=workers,
            family=family, plateaux_degC=PLATEAU_SUBSETS[5],
        )  # fmt: skip
        out += [(str(f), float(t["bft_degC"])) for f, t in done]
    return out
