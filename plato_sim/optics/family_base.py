"""What the cameras of the non-design optical families share (nodal, high-order).

Each family's camera is a frozen dataclass with ``optics`` (its ``camera`` geometry and
``field_radius_deg``), ``thermal`` (:class:`~plato_sim.optics.thermal.ThermalModel`) and
``diffusion_sigma_px``; it duck-types :class:`~plato_sim.optics.model.CameraModel` for the
truth code and the campaign emulator.  :class:`FamilyCamera` gives them the thermal zero
move, the engine with the camera's diffusion, the detected spectrum from a photon-rate shape
and the thermal part of the truth record, written once.
"""

from __future__ import annotations

from dataclasses import fields, replace

from plato_sim.optics.spectra import Spectrum, binned_spectrum
from plato_sim.optics.thermal import ThermalModel

__all__ = ["FamilyCamera", "binned_rate_spectrum"]


def binned_rate_spectrum(camera, lamp_fn, n: int, name: str, qe_factor_fn=None) -> Spectrum:
    """``n`` equal bins over the camera band, weighted by the detected photon rate
    ``lamp_fn(lambda_nm)`` x transmission x QE (times ``qe_factor_fn(lambda_nm)`` if given),
    sampled at the bin centres (:func:`plato_sim.optics.spectra.binned_spectrum`)."""
    return binned_spectrum(camera, lamp_fn, n, name, qe_factor=qe_factor_fn)


class FamilyCamera:
    """Mixin of the family cameras: a frozen dataclass with ``optics``, ``thermal``,
    ``camera_id`` and plain float parameters (``diffusion_sigma_px``...), whose class sets
    ``family`` (the name in truth sidecars) and ``optics_cls`` (with ``from_dict``)."""

    family = ""
    optics_cls: type = type(None)

    def to_dict(self) -> dict:
        """JSON-ready parameters: id, optics, thermal, then the other fields in order."""
        d = {"camera_id": self.camera_id, "optics": self.optics.to_dict(),
             "thermal": self.thermal_dict()}  # fmt: skip
        for f in fields(self):
            d.setdefault(f.name, getattr(self, f.name))
        return d

    @classmethod
    def from_dict(cls, d: dict):
        """Inverse of :meth:`to_dict` (also accepts a truth sidecar's family entry)."""
        rest = {f.name: float(d[f.name]) for f in fields(cls)
                if f.name not in ("optics", "thermal", "camera_id")}  # fmt: skip
        return cls(optics=cls.optics_cls.from_dict(d["optics"]),
                   thermal=ThermalModel(**d["thermal"]), camera_id=int(d["camera_id"]),
                   **rest)  # fmt: skip

    def truth_dict(self) -> dict:
        """What the campaign emulator's truth sidecar records of this camera."""
        return {"family": self.family, self.family: self.to_dict()}

    def with_t0(self, t0_degC: float):
        """Same camera, thermal zero moved to ``t0_degC``."""
        return replace(self, thermal=self.thermal.with_t0(t0_degC))

    def engine(self, **kwargs):
        """A :class:`~plato_sim.psf.fast.FastEngine` with this camera's charge diffusion."""
        from plato_sim.psf.fast import FastEngine

        return FastEngine(camera=self.optics.camera, diffusion_sigma_px=self.diffusion_sigma_px,
                          **kwargs)  # fmt: skip

    def thermal_dict(self) -> dict:
        """The thermal model's parameters (JSON-ready)."""
        return {
            "s_um_per_degC": self.thermal.s_um_per_degC,
            "t0_degC": self.thermal.t0_degC,
            "q_um_per_degC2": self.thermal.q_um_per_degC2,
        }
