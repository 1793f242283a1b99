"""The field head: one field position's stamps at every plateau -> that field's best focus.

Why it exists.  FocusNet reads one stamp at a time; the thermal-model fit then asks every
field position's offsets to follow ``delta = s (T - T_f)``.  On a camera whose aberrations
lie outside the pretraining's families the network's offset is biased, and the bias depends
on the focus of the stamp, so neither the slope nor the average over field positions removes
it (docs/cnn.md sections 4 and 5).  A field position imaged at several plateaux is a
through-focus series: how its image changes from one plateau to the next shows its
aberrations (the phase diversity that the forward fit exploits, docs/forward.md), which one
image cannot.

What it does.  Each plateau of a field position is summarised by the mean, over its frames,
of the FocusNet features of its stamps (:func:`stamp_features`: the network's pooled
convolutional features, its three raw outputs and the stamp's log flux; for a head made with
``moments``, also the stamps' model-free image moments, :func:`head_features`); a permutation-
invariant network (DeepSets: a per-plateau MLP that also reads the plateau's TRP1 relative to
the series' mean, mean and max pooling over the plateaux, an MLP that also reads the plateau
count) predicts the field's best-focus temperature ``T_f`` relative to the mean TRP1 of its
plateaux, with a Gaussian sigma.  The camera's T_BF is the mean of its fields' ``T_f``, the
definition's approximation the CNN estimate uses (docs/cnn.md section 3).

It is trained on through-focus series of a broad camera prior (the design family and the
high-order family, ``plato_cnn/data/field_head_dataset.yaml``;
:mod:`plato_cnn.pipelines.field_head`), with FocusNet frozen: the head is the only part that
learns.  Units: temperatures in degC, relative TRP1 scaled by
:data:`TEMPERATURE_SCALE_DEGC`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from plato_cnn.nn.model import FocusNet, prepare_inputs
from plato_cnn.nn.stamp_moments import moment_count, stamp_moments
from plato_sim.errors import ModelFormatError, ParameterError

__all__ = [
    "FIELD_HEAD_FORMAT",
    "TEMPERATURE_SCALE_DEGC",
    "FieldHead",
    "FieldHeadCard",
    "FieldHeadConfig",
    "FieldSeries",
    "default_field_head_dir",
    "feature_dim",
    "field_series",
    "head_features",
    "load_field_head",
    "network_digest",
    "network_outputs",
    "save_field_head",
    "stamp_features",
]

#: format of ``field_head.json``
FIELD_HEAD_FORMAT = 1
#: ``calibration["source"]`` of a head fine-tuned on a new family whose systematic terms were
#: measured on that family's cameras (:mod:`plato_cnn.pipelines.field_head_finetune`).
FAMILY_TUNED = "leave-one-camera-out on the fine-tuning cameras"
#: TRP1 relative to the series' mean, and the head's output, are in units of this (degC)
TEMPERATURE_SCALE_DEGC = 10.0
#: the plateau count enters the head divided by this (the largest count it was trained on)
PLATEAU_COUNT_SCALE = 5.0


def network_digest(model_dir: str | Path) -> str:
    """SHA-256 of a model directory's weights (``model.safetensors``): the features the head
    reads are those of these weights, whatever the model's description says."""
    import hashlib

    path = Path(model_dir) / "model.safetensors"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelFormatError(f"{path}: unreadable weights ({exc})") from exc


def feature_dim(net: FocusNet) -> int:
    """Length of one stamp's feature vector for ``net``: its last stage's channels, its three
    raw outputs and the log flux."""
    return int(net.config.channels[-1]) + 3 + 1


def network_outputs(features: np.ndarray) -> dict[str, np.ndarray]:
    """FocusNet's predictions (``mu_um``, ``sigma_um``, ``p_behind``, as
    :meth:`FocusNet.predict` gives them) from the raw outputs held in :func:`stamp_features`'
    rows (the three columns before the last; of :func:`head_features`' rows, pass the first
    ``FieldHeadConfig.network_dim`` columns): one pass of the network serves both the field
    head and the CNN fit."""
    raw = torch.as_tensor(np.asarray(features, dtype=np.float32)[:, -4:-1])
    return FocusNet.outputs(raw)


@torch.no_grad()
def stamp_features(
    net: FocusNet,
    stamps: np.ndarray,
    theta_deg: np.ndarray,
    phi_deg: np.ndarray,
    batch: int = 2048,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """FocusNet's view of each stamp, ``(N, feature_dim(net))`` float32: the pooled output of
    its convolutional body, its raw outputs (mu and log sigma in units of 100 um, the side-of-
    focus logit) and the stamp's ``log10`` flux less 5 (the network's last scalar).

    Stamps as for :meth:`FocusNet.predict` (electrons, focal-plane orientation)."""
    net.eval()
    out = []
    for s in range(0, len(stamps), batch):
        e = slice(s, s + batch)
        img, sc = prepare_inputs(stamps[e], theta_deg[e], phi_deg[e], net.config.crop)
        img, sc = img.to(device), sc.to(device)
        f = net.body(net.stem(img)).mean(dim=(-2, -1))
        raw = net.head(torch.cat([f, sc], dim=1))
        out.append(torch.cat([f, raw, sc[:, -1:]], dim=1).cpu().numpy())
    d = feature_dim(net)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, d), np.float32)


def head_features(
    net: FocusNet,
    stamps: np.ndarray,
    theta_deg: np.ndarray,
    phi_deg: np.ndarray,
    moments: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """What a field head reads of each stamp: :func:`stamp_features` and, for a head made
    with ``moments`` (:class:`FieldHeadConfig`: the moment set, 0 for none; ``True`` reads
    as set 1), the stamp's image moments after them
    (:func:`plato_cnn.nn.stamp_moments.stamp_moments`), ``(N, D)`` float32."""
    f = stamp_features(net, stamps, theta_deg, phi_deg, device=device)
    if not moments:
        return f
    return np.concatenate([f, stamp_moments(stamps, phi_deg, version=int(moments))], axis=1)


@dataclass(frozen=True)
class FieldSeries:
    """The through-focus series of a campaign's field positions (``F`` positions, at most
    ``P`` plateaux each; absent plateaux masked).

    Attributes:
        field_id: ``(F,)`` the campaign's field index.
        theta_deg, phi_deg: ``(F,)`` field position.
        features: ``(F, P, D)`` mean stamp features of each (field, plateau) cell.
        temperature_degC: ``(F, P)`` mean TRP1 of the cell's frames (0 where masked).
        mask: ``(F, P)`` bool, the cell has frames.
        n_frames: ``(F, P)`` frames averaged per cell.
        plateaux: ``(P,)`` the plateaux' ids (OBSID), in the order of the second axis.
    """

    field_id: np.ndarray
    theta_deg: np.ndarray
    phi_deg: np.ndarray
    features: np.ndarray
    temperature_degC: np.ndarray
    mask: np.ndarray
    n_frames: np.ndarray
    plateaux: np.ndarray


def field_series(
    features: np.ndarray,
    field_id: np.ndarray,
    plateau: np.ndarray,
    temperature_degC: np.ndarray,
    theta_deg: np.ndarray,
    phi_deg: np.ndarray,
) -> FieldSeries:
    """Group per-frame ``features`` into (field, plateau) cells: their mean feature and TRP1."""
    n = len(features)
    if not (len(field_id) == len(plateau) == len(temperature_degC) == n):
        raise ParameterError(
            "field_series: features, field ids, plateaux and TRP1 differ in length"
        )
    if n == 0:
        raise ParameterError("field_series: no frames")
    fids, fi = np.unique(field_id, return_inverse=True)
    pls, pi = np.unique(plateau, return_inverse=True)
    nf, npl, d = len(fids), len(pls), features.shape[1]
    cnt = np.zeros((nf, npl))
    np.add.at(cnt, (fi, pi), 1.0)
    fsum = np.zeros((nf, npl, d))
    np.add.at(fsum, (fi, pi), features.astype(np.float64))
    tsum = np.zeros((nf, npl))
    np.add.at(tsum, (fi, pi), temperature_degC)
    mask = cnt > 0
    safe = np.where(mask, cnt, 1.0)
    first = np.array([np.flatnonzero(fi == k)[0] for k in range(nf)])
    return FieldSeries(
        field_id=fids,
        theta_deg=np.asarray(theta_deg)[first],
        phi_deg=np.asarray(phi_deg)[first],
        features=(fsum / safe[..., None]).astype(np.float32),
        temperature_degC=np.where(mask, tsum / safe, 0.0),
        mask=mask,
        n_frames=cnt.astype(int),
        plateaux=pls,
    )


@dataclass(frozen=True)
class FieldHeadConfig:
    """Architecture: ``feature_dim`` inputs per plateau, ``hidden`` units per layer;
    ``moments``: the inputs end with the stamps' image moments of that set (0: none; a card's
    ``true`` is set 1; :func:`head_features`)."""

    feature_dim: int
    hidden: int = 96
    moments: int = 0

    @property
    def network_dim(self) -> int:
        """How many of the inputs are the network's own (:func:`stamp_features`)."""
        return int(self.feature_dim) - moment_count(int(self.moments))


class FieldHead(nn.Module):
    """DeepSets over a field position's plateaux -> ``(T_f - mean T) / 10 degC`` and the log
    of its sigma (same units).  Feature normalisation is kept in the module's buffers."""

    def __init__(self, config: FieldHeadConfig) -> None:
        super().__init__()
        self.config = config
        d, h = int(config.feature_dim), int(config.hidden)
        self.register_buffer("feature_mean", torch.zeros(d))
        self.register_buffer("feature_std", torch.ones(d))
        self.phi = nn.Sequential(nn.Linear(d + 1, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.rho = nn.Sequential(nn.Linear(2 * h + 1, h), nn.ReLU(), nn.Linear(h, 2))

    def forward(self, features: torch.Tensor, dt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``features (B, P, D)`` raw, ``dt (B, P)`` relative TRP1 / 10 degC, ``mask (B, P)``
        bool -> ``(B, 2)``.  Masked plateaux do not change the output."""
        x = (features - self.feature_mean) / self.feature_std
        m = mask[..., None].to(x.dtype)
        z = self.phi(torch.cat([x * m, (dt * mask)[..., None]], dim=-1))
        mean = (z * m).sum(1) / m.sum(1).clamp(min=1.0)
        big = torch.finfo(z.dtype).max
        top = z.masked_fill(~mask[..., None], -big).max(1).values
        count = m.sum(1) / PLATEAU_COUNT_SCALE
        return self.rho(torch.cat([mean, top, count], dim=-1))

    @torch.no_grad()
    def predict(
        self, features: np.ndarray, temperature_degC: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each series' best-focus temperature and its sigma (degC), ``(F,)`` each."""
        self.eval()
        mask = np.asarray(mask, bool)
        if not mask.any(axis=1).all():
            raise ParameterError("FieldHead.predict: a field position without any plateau")
        t = np.asarray(temperature_degC, float)
        tbar = (t * mask).sum(1) / mask.sum(1)
        dt = (t - tbar[:, None]) / TEMPERATURE_SCALE_DEGC
        out = self(
            torch.as_tensor(features, dtype=torch.float32),
            torch.as_tensor(dt, dtype=torch.float32),
            torch.as_tensor(mask),
        ).double()
        t_f = tbar + TEMPERATURE_SCALE_DEGC * out[:, 0].numpy()
        return t_f, TEMPERATURE_SCALE_DEGC * out[:, 1].exp().numpy()


@dataclass
class FieldHeadCard:
    """What ``field_head.json`` says: the architecture, the FocusNet it reads (the SHA-256 of
    its weights, :func:`network_digest`), the systematic sigma per plateau count (degC, from
    its calibration) and how it was made."""

    config: dict
    base_weights_sha256: str
    systematic_sigma_degC: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    format: int = FIELD_HEAD_FORMAT
    #: per plateau count, the term (degC) added in quadrature where the camera is flagged
    #: outside the families the network knows (docs/cnn.md section 7); empty: none measured
    family_sigma_degC: dict = field(default_factory=dict)
    family_calibration: dict = field(default_factory=dict)

    def systematic_for(self, n_plateaux: int) -> float | None:
        """The systematic term for ``n_plateaux`` plateaux: the calibrated count nearest
        below it (5 for more than 5); None without a calibration."""
        return _nearest_below(self.systematic_sigma_degC, n_plateaux)

    def family_for(self, n_plateaux: int) -> float | None:
        """The out-of-family term for ``n_plateaux`` plateaux (as :meth:`systematic_for`);
        None where none was measured."""
        return _nearest_below(self.family_sigma_degC, n_plateaux)


def _nearest_below(table: dict, n_plateaux: int) -> float | None:
    """``table``'s value at the plateau count nearest below ``n_plateaux`` (None if none)."""
    below = [k for k in sorted(int(k) for k in table) if k <= n_plateaux]
    return float(table[str(below[-1])]) if below else None


def default_field_head_dir() -> Path:
    """The field head shipped with the package (reads the shipped FocusNet)."""
    return Path(__file__).resolve().parents[1] / "data" / "default_field_head"


def save_field_head(head: FieldHead, card: FieldHeadCard, out_dir: str | Path) -> Path:
    """Write ``field_head.pt`` (state_dict) and ``field_head.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(head.state_dict(), out / "field_head.pt")
    desc = {**asdict(card), "config": asdict(head.config)}  # the architecture is the head's
    (out / "field_head.json").write_text(json.dumps(desc, indent=1) + "\n", "utf-8")
    return out


def load_field_head(
    head_dir: str | Path, base_weights_sha256: str | None = None
) -> tuple[FieldHead, FieldHeadCard]:
    """Read a field head; refuses (:class:`ModelFormatError`) a bad card, weights that do not
    fit it, non-finite weights, and a head made for another FocusNet than the one whose
    weights' digest is ``base_weights_sha256`` (when given, :func:`network_digest`)."""
    d = Path(head_dir)
    try:
        raw = json.loads((d / "field_head.json").read_text("utf-8"))
        card = FieldHeadCard(**raw)
        head = FieldHead(FieldHeadConfig(**card.config))
        state = torch.load(d / "field_head.pt", map_location="cpu", weights_only=True)
        head.load_state_dict(state)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ModelFormatError(f"{d}: not a readable field head ({exc})") from exc
    if card.format != FIELD_HEAD_FORMAT:
        raise ModelFormatError(
            f"{d}: field head format {card.format}, expected {FIELD_HEAD_FORMAT}"
        )
    if not all(torch.isfinite(v).all() for v in head.state_dict().values()):
        raise ModelFormatError(f"{d}: non-finite weights")
    if base_weights_sha256 is not None and card.base_weights_sha256 != base_weights_sha256:
        raise ModelFormatError(
            f"{d}: this field head reads the FocusNet with card {card.base_weights_sha256[:12]}, "
            f"not {base_weights_sha256[:12]}"
        )
    head.eval()
    return head, card
