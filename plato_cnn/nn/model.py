"""The network: a compact ResNet from one star stamp to a focal offset with its uncertainty.

Target (chosen, and why).  The network predicts ``delta_um``: the star's focal offset from
its *own field position's EEF-optimal focus*, ``delta = dz_th - dz_th_opt(field)`` (um,
> 0 behind focus).  That is what an image shows (how far from its best the PSF is, and on
which side), it does not depend on the unknown paraxial reference of a real camera, and
the best-focus temperature follows from it without any model of where "zero" lies: per
field ``delta(T) = s (T - T_f)`` and ``T_BF`` is where the field-averaged EEF peaks
(:mod:`plato_cnn.fit`).

Input contract (what :func:`prepare_inputs` expects; the campaign reader and the dataset
generator both produce it with :func:`plato_sim.stamps.extract_stamp`):

* ``stamps``: ``(N, 32, 32)`` background-subtracted star stamps in electrons, the pixel
  nearest the star's centroid at index ``(16, 16)``, no resampling, in **focal-plane
  orientation** (``[y, x]`` of :mod:`plato_sim.optics.camera`; campaign frames are cut in their
  CCD's axes and turned by :func:`plato_cnn.predict.network_stamps`).
* ``theta_deg, phi_deg``: the field position of each stamp.
* The network looks at the central ``crop`` x ``crop`` pixels (default 20), normalised by
  their sum (flux-free), and gets ``log10`` of that sum as a separate input so that it can
  widen its uncertainty for faint stars.

Outputs: ``mu_um`` (the offset), ``log_sigma_um`` (heteroscedastic Gaussian uncertainty)
and ``sign_logit`` (log-odds that the star is behind its best focus), the last one because a
single defocused image can leave the side of focus undecided; :mod:`plato_cnn.fit` reports
``sign_ambiguous`` from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import FIELD_RADIUS_DEG

__all__ = ["FocusNetConfig", "FocusNet", "prepare_inputs", "N_SCALARS"]

#: Scalar inputs: h, cos phi, sin phi, cos 2phi, sin 2phi, log10 flux (centred).
N_SCALARS = 6
#: the network's outputs are in units of 100 um (keeps them of order 1)
NETWORK_SCALE_UM = 100.0


@dataclass(frozen=True)
class FocusNetConfig:
    """Architecture of :class:`FocusNet` (stored next to the weights)."""

    crop: int = 20
    channels: tuple[int, ...] = (16, 32, 64)
    blocks_per_stage: int = 2
    hidden: int = 128
    dropout: float = 0.0

    def to_dict(self) -> dict:
        """Plain dict (lists for tuples)."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FocusNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        names = set(cls.__dataclass_fields__)
        unknown = set(d) - names
        if unknown:
            raise ParameterError(f"unknown FocusNet config keys: {sorted(unknown)}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(int(c) for c in d["channels"])
        return cls(**d)


def prepare_inputs(
    stamps: np.ndarray | torch.Tensor,
    theta_deg: np.ndarray | torch.Tensor,
    phi_deg: np.ndarray | torch.Tensor,
    crop: int = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamps and field positions -> ``(images (N,1,crop,crop), scalars (N, N_SCALARS))``.

    Images are normalised by their (clipped-positive) sum; that sum's ``log10`` (centred on
    5, i.e. 1e5 counts) is the last scalar.
    """
    x = torch.as_tensor(np.asarray(stamps) if not torch.is_tensor(stamps) else stamps)
    x = x.to(torch.float32)
    if x.ndim != 3:
        raise ParameterError(f"stamps must be (N, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h < crop or w < crop:
        raise ParameterError(f"stamps of {h}x{w} are smaller than the model's crop {crop}")
    r0 = h // 2 - crop // 2
    c0 = w // 2 - crop // 2
    x = x[:, r0 : r0 + crop, c0 : c0 + crop]
    flux = x.clamp(min=0).sum(dim=(-2, -1)).clamp(min=1e-6)
    img = (x / flux[:, None, None])[:, None] * float(crop * crop) / 10.0
    th = torch.as_tensor(np.asarray(theta_deg, dtype=np.float32)).reshape(-1)
    ph = torch.deg2rad(torch.as_tensor(np.asarray(phi_deg, dtype=np.float32)).reshape(-1))
    s = torch.stack(
        [
            th / FIELD_RADIUS_DEG,
            torch.cos(ph),
            torch.sin(ph),
            torch.cos(2 * ph),
            torch.sin(2 * ph),
            torch.log10(flux) - 5.0,
        ],
        dim=1,
    )
    return img, s


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.skip(x))


class FocusNet(nn.Module):
    """Compact ResNet: stamp + field position -> (mu_um, log_sigma_um, sign_logit)."""

    def __init__(self, config: FocusNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or FocusNetConfig()
        ch = self.config.channels
        self.stem = nn.Sequential(
            nn.Conv2d(1, ch[0], 3, 1, 1, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c_in = ch[0]
        for i, c in enumerate(ch):
            for b in range(self.config.blocks_per_stage):
                layers.append(_Block(c_in, c, 2 if (b == 0 and i > 0) else 1))
                c_in = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(c_in + N_SCALARS, self.config.hidden),
            nn.ReLU(),
            nn.Dropout(self.config.dropout),
            nn.Linear(self.config.hidden, self.config.hidden),
            nn.ReLU(),
            nn.Linear(self.config.hidden, 3),
        )

    def forward(self, images: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(N, 3)``: mu (units of 100 um), log sigma (same units), sign logit."""
        f = self.body(self.stem(images)).mean(dim=(-2, -1))
        return self.head(torch.cat([f, scalars], dim=1))

    @staticmethod
    def split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw outputs -> ``(mu_um, log_sigma_um, sign_logit)``."""
        mu = out[:, 0] * NETWORK_SCALE_UM
        log_sigma = out[:, 1].clamp(-6.0, 3.0) + math.log(NETWORK_SCALE_UM)
        return mu, log_sigma, out[:, 2]

    @staticmethod
    def loss(
        out: torch.Tensor,
        target_um: torch.Tensor,
        sign_margin_um: float = 10.0,
        fixed_sigma_um: float | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """Gaussian negative log-likelihood of the offset plus the side-of-focus cross-entropy.

        The sign term is weighted by ``min(1, |delta| / sign_margin_um)``: near focus the side
        is meaningless.  With ``fixed_sigma_um`` the offset is fitted by least squares at that
        fixed scale and the sigma head by the likelihood of the *detached* offset, so a large
        error can only be reduced by moving the offset, never by widening sigma (fine-tuning).
        """
        t = target_um / NETWORK_SCALE_UM
        mu = out[:, 0]
        log_sigma = out[:, 1].clamp(-6.0, 3.0)
        if fixed_sigma_um is None:
            nll = 0.5 * ((t - mu) / log_sigma.exp()) ** 2 + log_sigma
        else:
            fixed = fixed_sigma_um / NETWORK_SCALE_UM
            nll = (
                0.5 * ((t - mu) / fixed) ** 2
                + 0.5 * ((t - mu.detach()) / log_sigma.exp()) ** 2
                + log_sigma
            )
        w = (target_um.abs() / sign_margin_um).clamp(max=1.0)
        bce = nn.functional.binary_cross_entropy_with_logits(
            out[:, 2], (target_um > 0).to(out.dtype), weight=w
        )
        loss = nll.mean() + 0.1 * bce
        with torch.no_grad():
            rmse = ((t - mu) ** 2).mean().sqrt() * NETWORK_SCALE_UM
        return loss, {
            "nll": float(nll.mean().detach()),
            "bce": float(bce.detach()),
            "rmse_um": float(rmse),
        }

    @torch.no_grad()
    def predict(
        self,
        stamps: np.ndarray,
        theta_deg: np.ndarray,
        phi_deg: np.ndarray,
        batch: int = 1024,
        device: str | torch.device = "cpu",
    ) -> dict[str, np.ndarray]:
        """Predictions for many stamps: ``mu_um``, ``sigma_um``, ``p_behind`` (numpy)."""
        self.eval()
        mus, sigs, ps = [], [], []
        for s in range(0, len(stamps), batch):
            e = slice(s, s + batch)
            img, sc = prepare_inputs(stamps[e], theta_deg[e], phi_deg[e], self.config.crop)
            out = self.outputs(self(img.to(device), sc.to(device)))
            mus.append(out["mu_um"])
            sigs.append(out["sigma_um"])
            ps.append(out["p_behind"])
        return {
            "mu_um": np.concatenate(mus) if mus else np.zeros(0),
            "sigma_um": np.concatenate(sigs) if sigs else np.zeros(0),
            "p_behind": np.concatenate(ps) if ps else np.zeros(0),
        }

    @classmethod
    def outputs(cls, raw: torch.Tensor) -> dict[str, np.ndarray]:
        """Raw outputs ``(N, 3)`` -> ``mu_um``, ``sigma_um`` (um) and ``p_behind`` (numpy)."""
        mu, ls, sl = cls.split(raw)
        return {"mu_um": mu.cpu().numpy(), "sigma_um": ls.exp().cpu().numpy(),
                "p_behind": torch.sigmoid(sl).cpu().numpy()}  # fmt: skip
