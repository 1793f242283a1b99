"""TRP1 temperature -> thermal focal shift.

Convention (docs/facts.md, one set for the whole project): the focal shift ``dz`` is in
micrometres and ``dz > 0`` means the detector lies *behind* the focus (extra-focal).  The
thermal focal shift is a piston common to every field position::

    dz_th(T) = s (T - T0) + q (T - T0)**2

``s`` about +10 um/degC (ESA: 0.1 degC moves the focus by about 1 um; the exact value and
even the sign of a real camera are unknown, hence parameters), ``T0`` the TRP1 temperature at
which ``dz_th = 0``.  ``T0`` is *not* the best-focus temperature: see
:mod:`plato_sim.truth.bestfocus`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from plato_sim.errors import ParameterError

__all__ = ["ThermalModel", "DEFAULT_SENSITIVITY_UM_PER_DEGC", "S_PRIOR_UM_PER_DEGC"]

DEFAULT_SENSITIVITY_UM_PER_DEGC = 10.0  # ESA: 0.1 degC ~ 1 um (docs/facts.md)
#: Prior on ``s`` (mean, 1-sigma; um/degC) for fits that cannot measure it (one plateau):
#: the mean from docs/facts.md, the spread ASSUMED (a real camera's ``s`` is not known to
#: better than ~30 %).
S_PRIOR_UM_PER_DEGC = (DEFAULT_SENSITIVITY_UM_PER_DEGC, 3.0)


@dataclass(frozen=True)
class ThermalModel:
    """Thermal focus model of one camera.

    Attributes:
        s_um_per_degC: linear sensitivity (um of focal shift per degC of TRP1).
        t0_degC: TRP1 temperature at which the thermal focal shift is zero.
        q_um_per_degC2: optional quadratic term (um / degC^2).
    """

    s_um_per_degC: float = DEFAULT_SENSITIVITY_UM_PER_DEGC
    t0_degC: float = -80.0
    q_um_per_degC2: float = 0.0

    def __post_init__(self) -> None:
        if self.s_um_per_degC == 0.0 and self.q_um_per_degC2 == 0.0:
            raise ParameterError("a thermal model needs a non-zero sensitivity")

    def focal_shift_um(self, temperature_degC: np.ndarray | float) -> np.ndarray:
        """Thermal focal shift dz_th (um) at TRP1 temperature(s) ``temperature_degC``."""
        d = np.asarray(temperature_degC, dtype=float) - self.t0_degC
        return self.s_um_per_degC * d + self.q_um_per_degC2 * d * d

    def temperature_degC(self, dz_th_um: np.ndarray | float) -> np.ndarray:
        """Inverse of :meth:`focal_shift_um` (the root nearest ``t0_degC``)."""
        dz = np.asarray(dz_th_um, dtype=float)
        s, q = self.s_um_per_degC, self.q_um_per_degC2
        if q == 0.0:
            return self.t0_degC + dz / s
        disc = s * s + 4.0 * q * dz
        if np.any(disc < 0):
            raise ParameterError("focal shift not reachable with this quadratic thermal model")
        # numerically stable root of q d^2 + s d - dz = 0 nearest d = 0
        return self.t0_degC + 2.0 * dz / (s + np.sign(s) * np.sqrt(disc))

    def with_t0(self, t0_degC: float) -> ThermalModel:
        """The same model with another ``T0``."""
        return replace(self, t0_degC=float(t0_degC))
