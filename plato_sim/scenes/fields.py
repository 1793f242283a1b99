"""Field positions of the ground tests.

The test houses image the point source at a table of ~40 field positions.  The real table is
not public: :func:`ground_test_fields` is an ASSUMED stand-in with the same character (rings
from near the axis to the field edge, azimuths staggered between rings, more positions on
the outer rings where the area is).  Other counts use a sunflower pattern, uniform in area.
"""

from __future__ import annotations

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import FIELD_RADIUS_DEG

__all__ = ["ground_test_fields", "sunflower_fields", "uniform_random_fields"]

#: (theta_deg, count, first azimuth_deg): azimuths staggered between rings and kept at least
#: 11 deg away from the focal-plane axes, where the 2.6 mm gaps between the four CCDs lie.
_RINGS_DEG = (
    (2.5, 4, 45.0),
    (5.5, 6, 15.0),
    (8.5, 6, 45.0),
    (11.5, 8, 22.5),
    (14.5, 8, 11.25),
    (17.5, 8, 33.75),
)


def ground_test_fields(
    n: int = 40, field_radius_deg: float = FIELD_RADIUS_DEG
) -> tuple[np.ndarray, np.ndarray]:
    """``(theta_deg, phi_deg)`` of ``n`` test positions (the 40-position table for n = 40)."""
    if n < 1:
        raise ParameterError("at least one field position")
    if n != 40:
        return sunflower_fields(n, 0.95 * field_radius_deg)
    th, ph = [], []
    for theta, count, start in _RINGS_DEG:
        for k in range(count):
            th.append(theta)
            ph.append((start + 360.0 * k / count) % 360.0)
    return np.asarray(th), np.asarray(ph)


def sunflower_fields(n: int, radius_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions uniform in area within ``radius_deg`` (Vogel spiral)."""
    k = np.arange(n) + 0.5
    theta = radius_deg * np.sqrt(k / n)
    phi = np.degrees(k * np.pi * (3.0 - np.sqrt(5.0))) % 360.0
    return theta, phi


def uniform_random_fields(
    rng: np.random.Generator, n: int, radius_deg: float = FIELD_RADIUS_DEG
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random positions uniform over the field's area."""
    theta = radius_deg * np.sqrt(rng.uniform(0.0, 1.0, n))
    phi = rng.uniform(0.0, 360.0, n)
    return theta, phi
