"""One plateau, one camera: a set network over the field positions corrects the mean offset.

Why it exists.  With one plateau the BFT is ``T_BF = T - m / s`` where ``m`` (um) is the
camera's mean offset from focus as FocusNet reads it frame by frame.  FocusNet sees one star
at a time and cannot know the camera's own aberrations: in one undersampled image extra
spherical aberration looks like extra defocus, and spherical is the same at every field
position.  Measured on the 40 calibration cameras (diagnostic scripts, not shipped), the
one-plateau error at -80 degC is 0.44 degC RMS *with the true s*, correlated with the
camera's spherical scale and the side of focus; far from focus (-90 degC) it is 0.16.  Those
errors are common to all field positions of a camera, so they cannot average out over the
field; but the frames of all 40 field positions together do show the camera (how EEF,
FocusNet's offsets, its sigmas and its side-of-focus probabilities vary over the field).

What it does. A small permutation-invariant network (DeepSets: a per-field MLP, mean and max
pooling over the field positions, an MLP) reads per-field summaries of one plateau
(:data:`FIELD_FEATURES`) and predicts the correction ``Delta`` (um) of the camera's mean
offset. It is trained on emulated cameras that neither the pretraining, the calibration nor the
benchmarks use (:func:`plato_cnn.pipelines.plateau_head.build_plateau_head`), on every plateau
of their sweeps, with the target ``Delta = s_true (T_mean - T_BF) - m0``, ``m0`` the mean
offset that the thermal-model fit implies at the prior's ``s``.
:func:`plato_cnn.predict.cnn_bft` adds each plateau's ``Delta`` to the offsets of its frames
before the thermal-model fit, with one plateau or several: the error changes sign with the side
of focus, so the slope of a multi-plateau fit does not absorb it (calibration cameras, 5 / 3 /
2 plateaux: 0.15 / 0.18 / 0.43 degC RMS without, 0.07 / 0.07 / 0.18 with the head).

What it leans on: the simulator's camera population (aberration families and their
spread), like the calibration of the systematic sigma; its cost under another aberration
model is measured by ``benchmarks/domain_shift.py``.  It cannot remove the error of ``s``
itself (one plateau cannot measure it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from plato_sim.errors import ParameterError
from plato_sim.names import BFT_KEY, normalise_keys

__all__ = [
    "FIELD_FEATURES",
    "PlateauHeadConfig",
    "PlateauHead",
    "field_features",
    "Snapshot",
    "campaign_snapshots",
    "stack_snapshots",
    "WEIGHTS_FILE",
    "HEAD_SCALE_UM",
    "load_plateau_head",
    "random_field_subsets",
    "subset_targets_um",
    "field_optima_degC",
    "predict_correction_um",
    "MIN_FIELD_FRACTION",
]

#: Per-field inputs, in this order; every one is a mean or a spread over the field's frames,
#: so that its expectation does not depend on the number of frames per field.
FIELD_FEATURES = (
    "mean mu / 100 um",
    "sd mu / 100 um",
    "mean sigma / 100 um",
    "mean P(behind)",
    "mean EEF (2x2)",
    "sd EEF (2x2)",
    "rho = theta / field radius",
    "rho^2",
    "cos phi",
    "sin phi",
)
WEIGHTS_FILE = "plateau_head.safetensors"
#: The head is applied only to plateaux with at least this fraction of the field positions
#: it was trained on (see :func:`plato_cnn.predict.cnn_bft`).
MIN_FIELD_FRACTION = 0.9
#: Scale of the target in the network (um).
#: the head's output is in units of 10 um (the plateau offsets' scale)
HEAD_SCALE_UM = 10.0


@dataclass(frozen=True)
class PlateauHeadConfig:
    """Architecture and training of the plateau head (an ensemble of ``members`` nets)."""

    hidden: int = 32
    members: int = 3
    epochs: int = 150
    batch: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0
    #: None: trained on whole field tables only (then used on tables of at least
    #: MIN_FIELD_FRACTION of that size); a number: every batch sees a random subset of
    #: min_fields..all field positions of each snapshot, so that the head serves any table of
    #: that many positions or more (test designs of 10-40 positions)
    min_fields: int | None = None


class _DeepSets(nn.Module):
    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.phi = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.rho = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.phi(x)
        return self.rho(torch.cat([e.mean(1), e.max(1).values], 1))[:, 0]


class PlateauHead(nn.Module):
    """Ensemble of DeepSets nets: field features ``(B, F, 10)`` -> correction (um) ``(B,)``."""

    def __init__(self, config: PlateauHeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or PlateauHeadConfig()
        self.members = nn.ModuleList(
            _DeepSets(len(FIELD_FEATURES), self.config.hidden) for _ in range(self.config.members)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0) * HEAD_SCALE_UM


def field_features(
    mu_um: np.ndarray,
    sigma_um: np.ndarray,
    p_behind: np.ndarray,
    eef: np.ndarray,
    theta_deg: np.ndarray,
    phi_deg: np.ndarray,
    field_index: np.ndarray,
    n_fields: int,
    field_radius_deg: float,
) -> np.ndarray:
    """Per-field summaries ``(n_fields, 10)`` (float32) of one plateau's frames.

    ``field_index`` holds integers in ``[0, n_fields)``; every field must have frames.
    """
    f = np.asarray(field_index, int)
    cnt = np.bincount(f, minlength=n_fields).astype(float)
    if np.any(cnt == 0):
        raise ParameterError("every field position needs frames on the plateau")

    def mean(a):
        return np.bincount(f, np.asarray(a, float), n_fields) / cnt

    def sd(a):
        m = mean(a)
        return np.sqrt(np.maximum(mean(np.asarray(a, float) ** 2) - m**2, 0.0))

    rho = mean(theta_deg) / field_radius_deg
    phi = np.radians(mean(phi_deg))
    x = np.stack(
        [
            mean(mu_um) / 100.0,
            sd(mu_um) / 100.0,
            mean(sigma_um) / 100.0,
            mean(p_behind),
            mean(eef),
            sd(eef),
            rho,
            rho**2,
            np.cos(phi),
            np.sin(phi),
        ],
        axis=1,
    )
    return x.astype(np.float32)


def field_optima_degC(
    mu_um: np.ndarray,
    sigma_um: np.ndarray,
    temperature_degC: np.ndarray,
    field_index: np.ndarray,
    n_fields: int,
    s_um_per_degC: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(T_f, T_field)`` per field (degC): the thermal-model fit's optimum at ``s`` held
    fixed, and the mean TRP1 of the field's frames.  A plateau's mean offset as the one-plateau
    fit reads it is ``m0 = s (mean T_field - mean T_f)``."""
    from plato_cnn.fit import fit_thermal_model

    f = np.asarray(field_index, int)
    t = np.asarray(temperature_degC, float)
    _, _, t_f = fit_thermal_model(mu_um, sigma_um, t, f, n_fields, (s_um_per_degC, 1e-6))
    t_field = np.bincount(f, t, n_fields) / np.bincount(f, None, n_fields)
    return np.asarray(t_f, float), t_field


@dataclass
class Snapshot:
    """One camera on one plateau: field features, the fit's offset and the target (um)."""

    camera: str
    x: np.ndarray
    m0_um: float
    t_mean_degC: float
    target_um: float
    s_true: float
    t_bf_true_degC: float
    #: per field: the fit's optimum T_f and the mean TRP1 (degC), and the s they were read
    #: at; they give the target of any sub-table of the fields (:func:`subset_targets_um`)
    field_t_opt_degC: np.ndarray | None = None
    field_t_degC: np.ndarray | None = None
    s_prior_um_per_degC: float | None = None


def campaign_snapshots(
    frames,
    pred: dict,
    eef: np.ndarray,
    s_prior_um_per_degC: float,
    truth: dict | None = None,
    camera: str = "",
) -> list[Snapshot]:
    """Snapshots of every plateau (OBSID) of one camera's frames.

    Args:
        frames: :class:`plato_cnn.reader.CampaignFrames` (usable frames).
        pred: FocusNet predictions for those frames (:func:`plato_cnn.predict.predict_frames`).
        eef: per-frame EEF (2x2 variant).
        s_prior_um_per_degC: the ``s`` at which the fit's offset ``m0`` is read.
        truth: the emulator's truth (``bft_degC``, ``thermal.s_um_per_degC``) for training;
            ``None`` leaves the target NaN.
    """
    from plato_sim.optics.camera import PLATO_NORMAL_CAMERA

    out = []
    for ob in np.unique(frames.obsid):
        m = frames.obsid == ob
        ids, fi = np.unique(frames.field_id[m], return_inverse=True)
        nf = len(ids)
        mu, sg = pred["mu_um"][m], pred["sigma_um"][m]
        x = field_features(
            mu, sg, pred["p_behind"][m], eef[m], frames.field_theta_deg[m],
            frames.field_phi_deg[m], fi, nf, PLATO_NORMAL_CAMERA.field_radius_deg,
        )  # fmt: skip
        t_f, t_field = field_optima_degC(mu, sg, frames.temperature_degC[m], fi, nf,
                                         s_prior_um_per_degC)  # fmt: skip
        t_mean = float(np.mean(t_field))
        m0 = float(s_prior_um_per_degC * (t_mean - np.nanmean(t_f)))
        s_true = t_bf = target = float("nan")
        if truth is not None:
            s_true = float(truth["thermal"]["s_um_per_degC"])
            t_bf = float(normalise_keys(truth, "truth")[BFT_KEY])
            target = s_true * (t_mean - t_bf) - m0
        out.append(Snapshot(camera, x, m0, t_mean, target, s_true, t_bf,
                            t_f, t_field, float(s_prior_um_per_degC)))  # fmt: skip
    return out


def subset_targets_um(snaps: list[Snapshot], keep: torch.Tensor) -> torch.Tensor:
    """The target of each snapshot restricted to its fields ``keep`` ``(B, n)`` (indices):
    ``s_true (T_mean - T_BF) - m0`` with ``T_mean`` and ``m0`` of those fields only, as the
    fit reads a plateau of that field table (um)."""
    if any(s.field_t_opt_degC is None for s in snaps):
        raise ParameterError("snapshots without per-field optima: rebuild them")
    t_f = torch.from_numpy(np.stack([s.field_t_opt_degC for s in snaps]))
    t_fld = torch.from_numpy(np.stack([s.field_t_degC for s in snaps]))
    k = keep.long()
    tf_sub, tm_sub = torch.gather(t_f, 1, k).nanmean(1), torch.gather(t_fld, 1, k).mean(1)
    s_true = torch.tensor([s.s_true for s in snaps], dtype=torch.float64)
    t_bf = torch.tensor([s.t_bf_true_degC for s in snaps], dtype=torch.float64)
    s0 = torch.tensor([s.s_prior_um_per_degC for s in snaps], dtype=torch.float64)
    return (s_true * (tm_sub - t_bf) - s0 * (tm_sub - tf_sub)).float()


def random_field_subsets(
    x: torch.Tensor, min_fields: int, generator: torch.Generator, n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random table of ``n`` of the ``F`` field positions of each snapshot in ``x``
    ``(B, F, features)``; ``n`` (default) drawn uniformly in ``min_fields..F`` once for the
    batch.  Returns the sub-tables ``(B, n, features)`` and the kept indices ``(B, n)``."""
    f = x.shape[1]
    if not 1 <= min_fields <= f:
        raise ParameterError(f"min_fields={min_fields} must lie in 1..{f}")
    if n is None:
        n = int(torch.randint(min_fields, f + 1, (1,), generator=generator))
    keep = torch.rand(x.shape[:2], generator=generator).argsort(1)[:, :n]
    return torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[2])), keep


def stack_snapshots(snaps: list[Snapshot]) -> torch.Tensor:
    nf = {s.x.shape[0] for s in snaps}
    if len(nf) != 1:
        raise ParameterError(f"snapshots with different numbers of field positions: {sorted(nf)}")
    return torch.from_numpy(np.stack([s.x for s in snaps]))


def predict_correction_um(head: PlateauHead, x: np.ndarray) -> float:
    """The correction (um) of one plateau's mean offset from its field features ``(F, 10)``."""
    with torch.no_grad():
        return float(head(torch.from_numpy(np.asarray(x, np.float32))[None])[0])


def load_plateau_head(model_dir: str | Path, card) -> PlateauHead | None:
    """The model directory's plateau head, or ``None`` when it has none.

    ``card``: the directory's :class:`plato_cnn.nn.card.ModelCard` (or its JSON object).
    """
    from safetensors.torch import load_file

    from plato_cnn.nn.card import ModelFormatError

    entry = card.get("plateau_head")
    if not entry:
        return None
    w = Path(model_dir) / entry.get("weights", WEIGHTS_FILE)
    try:
        if list(entry["features"]) != list(FIELD_FEATURES):
            raise ParameterError(f"features {entry['features']} are not {list(FIELD_FEATURES)}")
        head = PlateauHead(PlateauHeadConfig(**entry["config"]))
        head.load_state_dict(load_file(str(w), device="cpu"))
    except Exception as exc:  # noqa: BLE001 - json, safetensors and torch raise several types
        raise ModelFormatError(f"{model_dir}: unusable plateau head ({exc})") from exc
    return head.eval()
