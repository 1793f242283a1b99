"""Torch datasets for FocusNet: in-memory arrays, synthetic shards and campaign frames.

Every dataset yields ``(stamp (H, W) float32, theta_deg, phi_deg, delta_um)`` and exposes
``group_ids`` (one id per sample: the camera perturbation, or the camera) so that training
can hold out whole cameras.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrayFocusDataset"]


class ArrayFocusDataset(Dataset):
    """Samples held in numpy arrays.

    Args:
        stamps: ``(N, H, W)`` background-subtracted stamps.
        theta_deg, phi_deg: ``(N,)`` field positions.
        delta_um: ``(N,)`` targets (offset from the field's EEF-optimal focus, um).
        group_ids: ``(N,)`` camera / perturbation ids.
    """

    def __init__(
        self,
        stamps: np.ndarray,
        theta_deg: np.ndarray,
        phi_deg: np.ndarray,
        delta_um: np.ndarray,
        group_ids: np.ndarray,
    ) -> None:
        n = len(stamps)
        for name, a in (("theta_deg", theta_deg), ("phi_deg", phi_deg), ("delta_um", delta_um)):
            if len(a) != n:
                raise ValueError(f"{name} has {len(a)} entries for {n} stamps")
        self.stamps = np.ascontiguousarray(stamps, dtype=np.float32)
        self.theta_deg = np.asarray(theta_deg, dtype=np.float32)
        self.phi_deg = np.asarray(phi_deg, dtype=np.float32)
        self.delta_um = np.asarray(delta_um, dtype=np.float32)
        self.group_ids = np.asarray(group_ids)

    def __len__(self) -> int:
        return len(self.stamps)

    def __getitem__(self, i: int):
        return (
            torch.from_numpy(self.stamps[i]),
            float(self.theta_deg[i]),
            float(self.phi_deg[i]),
            float(self.delta_um[i]),
        )
