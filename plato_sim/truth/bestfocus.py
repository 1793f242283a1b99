"""The best-focus temperature of a modelled camera, as defined in docs/facts.md.

``T_BF`` is the TRP1 temperature at which the field-averaged *expected* EEF is maximal: the
mean over the test's field positions of the EEF averaged over uniformly distributed sub-pixel
positions of the star, noise-free, for the OGSE spectrum.  Because the thermal focal shift is
a common piston, this is found on the thermal focal shift ``dz_th`` and mapped to a
temperature through the camera's thermal model.

The sub-pixel average uses an ``n_sub x n_sub`` stratified grid of offsets (cell centres);
the maximum is found by a coarse grid, a refined grid and a parabola through the top three
points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from plato_sim.errors import ParameterError
from plato_sim.names import deprecated_alias, warn_deprecated_name
from plato_sim.optics.model import CameraModel, OpticalModel
from plato_sim.optics.spectra import Spectrum, ogse_spectrum
from plato_sim.optics.thermal import ThermalModel
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.fields import ground_test_fields
from plato_sim.truth.eef import eef

log = logging.getLogger(__name__)

__all__ = [
    "subpixel_grid",
    "expected_eef",
    "field_best_focus_um",
    "TRUTH_VERSION",
    "best_focus_shift_um",
    "best_focus_temperature",
    "t0_for_best_focus",
    "BestFocus",
]


def subpixel_grid(n_sub: int = 4) -> np.ndarray:
    """``(n_sub**2, 2)`` stratified sub-pixel offsets ``(dx, dy)`` (cell centres, pixels)."""
    g = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    dx, dy = np.meshgrid(g, g)
    return np.stack([dx.ravel(), dy.ravel()], axis=-1)


def _engine(engine: FastEngine | None) -> FastEngine:
    return engine if engine is not None else FastEngine()


def expected_eef(
    optics: OpticalModel,
    theta_deg: np.ndarray,
    phi_deg: np.ndarray,
    dz_th_um: np.ndarray,
    spectrum: Spectrum | None = None,
    engine: FastEngine | None = None,
    n_sub: int = 4,
) -> np.ndarray:
    """Sub-pixel-averaged, noise-free EEF; all of ``theta, phi, dz_th`` broadcast together.

    Returns an array of the broadcast shape.
    """
    eng = _engine(engine)
    sp = spectrum or ogse_spectrum(optics.camera)
    t, p, d = np.broadcast_arrays(
        np.asarray(theta_deg, float), np.asarray(phi_deg, float), np.asarray(dz_th_um, float)
    )
    shape = t.shape
    z = optics.zernikes_nm(t.ravel(), p.ravel(), d.ravel(), sp.wavelengths_array_nm)
    offs = subpixel_grid(n_sub)
    size = eng.fov_px
    out = np.empty(z.shape[0])
    with torch.no_grad():
        for s in range(0, z.shape[0], eng.chunk):
            e = slice(s, s + eng.chunk)
            o = eng.otf(z[e], sp)
            off = np.broadcast_to(offs, (o.shape[0],) + offs.shape)
            st = eng.stamps_from_otf(o, sp, off, size).cpu().numpy()
            out[e] = eef(st).mean(axis=-1)
    return out.reshape(shape)


def _maximise(fn, centre: np.ndarray, half_width: float, n_coarse: int = 11, n_fine: int = 9):
    """Maximise ``fn(dz (F, D)) -> (F, D)`` independently per row; returns (argmax, max)."""
    centre = np.asarray(centre, dtype=float)
    grid = centre[:, None] + np.linspace(-half_width, half_width, n_coarse)[None, :]
    v = fn(grid)
    k = np.argmax(v, axis=1)
    step = 2.0 * half_width / (n_coarse - 1)
    best = grid[np.arange(len(k)), k]
    fine = best[:, None] + np.linspace(-step, step, n_fine)[None, :]
    v = fn(fine)
    k = np.clip(np.argmax(v, axis=1), 1, n_fine - 2)
    rows = np.arange(len(k))
    k3 = k[:, None] + np.arange(-1, 2)[None, :]
    x3 = fine[rows[:, None], k3]
    shift, _ = _vertex3(x3, v[rows[:, None], k3])
    h = x3[:, 1] - x3[:, 0]
    xm = x3[:, 1] + np.clip(shift, -h, h)
    # the curve is flat-topped and skewed: a parabola through points h apart leaves its
    # vertex up to ~0.03 um (~0.003 degC) off; a least-squares parabola through 5 points
    # h/5 apart around it places the maximum to ~0.001 um
    g = h[:, None] / 5.0 * np.arange(-2.0, 3.0)[None, :]
    v = fn(xm[:, None] + g)
    x_out, y_out = xm.copy(), v[:, 2].copy()
    for r in rows:
        c2, c1, c0 = np.polyfit(g[r], v[r], 2)
        if c2 < 0:
            d = float(np.clip(-c1 / (2.0 * c2), g[r, 0], g[r, -1]))
            x_out[r], y_out[r] = xm[r] + d, c0 + c1 * d + c2 * d * d
    return x_out, y_out


def _vertex3(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertex of the parabola through three equally spaced points per row of ``(R, 3)``.

    Returns ``(shift from the middle point, value at the vertex)``; the shift is 0 where the
    points are not concave.
    """
    y0, y1, y2 = v[:, 0], v[:, 1], v[:, 2]
    h = x[:, 1] - x[:, 0]
    den = y0 - 2.0 * y1 + y2
    concave = den < 0
    safe = np.where(concave, den, -1.0)
    shift = np.where(concave, 0.5 * h * (y0 - y2) / safe, 0.0)
    top = np.where(concave, y1 - 0.125 * (y0 - y2) ** 2 / safe, y1)
    return shift, top


#: ``search="fast"`` of :func:`field_best_focus_um`: the bracketing scan (points over
#: +-half_width, OGSE wavelengths, sub-pixel grid) and the step (um) of the 3-point
#: parabola steps on the full spectrum and grid; at most ``_FAST_MAX_STEPS`` of them.
_FAST_COARSE = dict(n_points=7, n_wavelengths=2, n_sub=2)
_FAST_STEP_UM = 4.0
_FAST_MAX_STEPS = 4


def _maximise_fast(fn_coarse, fn, centre: np.ndarray, half_width: float):
    """Per-row maximum: a cheap bracketing scan ``fn_coarse``, then parabola steps on ``fn``.

    ``fn(rows, dz (R, D)) -> (R, D)`` evaluates rows ``rows`` only.  The scan's best point and
    its neighbours give a first vertex; each step evaluates ``fn`` at the vertex and
    ``+-_FAST_STEP_UM`` and moves to the new vertex; a row is done once the vertex lies
    within the three points (then the parabola through points 4 um apart places it to
    ~0.02 um, ``benchmarks/generate.py``).  Returns ``(argmax, max)``.
    """
    centre = np.asarray(centre, dtype=float)
    n = _FAST_COARSE["n_points"]
    rows = np.arange(len(centre))
    grid = centre[:, None] + np.linspace(-half_width, half_width, n)[None, :]
    v = fn_coarse(rows, grid)
    k = np.clip(np.argmax(v, axis=1), 1, n - 2)[:, None] + np.arange(-1, 2)[None, :]
    g3 = grid[rows[:, None], k]
    shift, _ = _vertex3(g3, v[rows[:, None], k])
    h = g3[:, 1] - g3[:, 0]
    x = g3[:, 1] + np.clip(shift, -h, h)
    top = np.full(len(centre), np.nan)
    todo = rows
    d = _FAST_STEP_UM * np.arange(-1.0, 2.0)[None, :]
    for _ in range(_FAST_MAX_STEPS):
        pts = x[todo, None] + d
        v = fn(todo, pts)
        shift, top[todo] = _vertex3(pts, v)
        concave = v[:, 0] - 2.0 * v[:, 1] + v[:, 2] < 0
        inside = concave & (np.abs(shift) <= _FAST_STEP_UM)
        # not concave: no maximum between the points, walk uphill (flat: cannot tell)
        shift = np.where(concave, shift, 2.0 * _FAST_STEP_UM * np.sign(v[:, 2] - v[:, 0]))
        # outside the three points the parabola extrapolates: move by at most two steps
        x[todo] += np.clip(shift, -2.0 * _FAST_STEP_UM, 2.0 * _FAST_STEP_UM)
        todo = todo[~inside]
        if len(todo) == 0:
            break
    else:
        log.warning(
            "best-focus search: %d field(s) not bracketed after %d steps of %g um",
            len(todo),
            _FAST_MAX_STEPS,
            _FAST_STEP_UM,
        )
    return x, top


def field_best_focus_um(
    optics: OpticalModel,
    theta_deg: np.ndarray,
    phi_deg: np.ndarray,
    spectrum: Spectrum | None = None,
    engine: FastEngine | None = None,
    n_sub: int = 4,
    half_width_um: float = 100.0,
    search: str = "refined",
) -> tuple[np.ndarray, np.ndarray]:
    """Per field position, the thermal focal shift (um) that maximises its expected EEF.

    Args:
        search: ``"refined"`` (the truth's search: 11 + 9 + 5 evaluations per field, vertex to
            ~0.001 um) or ``"fast"`` (the camera pool of synthetic datasets: a 7-point scan
            on 2 wavelengths and a 2x2 sub-pixel grid to bracket the maximum, then 3-point
            parabola steps 4 um apart on ``spectrum`` and ``n_sub``, usually one: ~6x
            cheaper, vertex within ~0.02 um of ``"refined"``).

    Returns ``(dz_th_opt_um, eef_max)``, each of the shape of the field arrays.
    """
    if search not in ("refined", "fast"):
        raise ParameterError(f"search must be 'refined' or 'fast', got {search!r}")
    sp = spectrum or ogse_spectrum(optics.camera)
    t = np.atleast_1d(np.asarray(theta_deg, float))
    p = np.atleast_1d(np.asarray(phi_deg, float))
    t, p = np.broadcast_arrays(t, p)
    lam_mean = float(np.dot(sp.wavelengths_array_nm, sp.weights_array))
    centre = -optics.local_focal_offset_um(t, p, 0.0, lam_mean)

    def on(rows, dz, spec, ns):
        return expected_eef(optics, t[rows, None], p[rows, None], dz, spec, engine, ns)

    if search == "fast":
        sp_c = ogse_spectrum(optics.camera, _FAST_COARSE["n_wavelengths"])
        return _maximise_fast(
            lambda r, dz: on(r, dz, sp_c, _FAST_COARSE["n_sub"]),
            lambda r, dz: on(r, dz, sp, n_sub),
            centre,
            half_width_um,
        )
    rows = np.arange(len(t))
    return _maximise(lambda dz: on(rows, dz, sp, n_sub), centre, half_width_um)


def best_focus_shift_um(
    optics: OpticalModel,
    theta_deg: np.ndarray | None = None,
    phi_deg: np.ndarray | None = None,
    spectrum: Spectrum | None = None,
    engine: FastEngine | None = None,
    n_sub: int = 4,
    half_width_um: float = 100.0,
) -> tuple[float, float]:
    """Thermal focal shift (um) maximising the field-averaged expected EEF, and that maximum.

    Field positions default to the 40-position test table.
    """
    if theta_deg is None or phi_deg is None:
        theta_deg, phi_deg = ground_test_fields()
    sp = spectrum or ogse_spectrum(optics.camera)
    t = np.asarray(theta_deg, float)
    p = np.asarray(phi_deg, float)
    lam_mean = float(np.dot(sp.wavelengths_array_nm, sp.weights_array))
    centre = -float(np.mean(optics.local_focal_offset_um(t, p, 0.0, lam_mean)))

    def fn(dz):  # dz (1, D)
        v = expected_eef(optics, t[:, None], p[:, None], dz[0][None, :], sp, engine, n_sub)
        return v.mean(axis=0)[None, :]

    x, y = _maximise(fn, np.array([centre]), half_width_um)
    return float(x[0]), float(y[0])


#: Sub-pixel grid (n x n) of the expected EEF for T_BF by its definition (truths of emulated
#: campaigns, benchmark and calibration sets, the forward method's answer).  The EEF of one
#: star is not smooth in its sub-pixel position (the best box jumps), so the grid average
#: converges slowly: against 24x24, T_BF moves by 0.047 degC RMS (max 0.083) on 8x8, 0.025 on
#: 12x12 and 0.014 on 16x16 (8 design-family cameras, ``benchmarks/truth_convergence.py``);
#: extrapolating that trend, 24x24 is within ~0.01 degC RMS of the continuous average.
TRUTH_N_SUB = 24
#: Version of the truth's numerics (the sub-pixel grid aside): written into every truth
#: sidecar; cached campaigns whose sidecar carries another version are emulated again
#: (:func:`plato_sim.scenes.ground_test.emulate_or_load`), since their folder names, which
#: carry the grid, do not change with the numerics.  Sidecars without one are version 1.
#: 2: the maximum refined by a parabola through 5 points 1 um apart (``_maximise``).
TRUTH_VERSION = 2


@dataclass(frozen=True)
class BestFocus:
    """Best focus of a camera model.

    Attributes:
        bft_degC: best-focus TRP1 temperature (``t_bf_degC``: deprecated alias).
        dz_th_um: thermal focal shift at best focus.
        eef_max: field-averaged expected EEF at best focus.
    """

    bft_degC: float
    dz_th_um: float
    eef_max: float

    t_bf_degC = deprecated_alias("bft_degC", "t_bf_degC")


def best_focus_temperature(model: CameraModel, **kwargs) -> BestFocus:
    """``T_BF`` of a camera model (keyword arguments go to :func:`best_focus_shift_um`)."""
    dz, e = best_focus_shift_um(model.optics, **kwargs)
    return BestFocus(float(model.thermal.temperature_degC(dz)), dz, e)


def t0_for_best_focus(
    model: CameraModel, bft_degC: float | None = None, **kwargs
) -> tuple[CameraModel, BestFocus]:
    """The same camera with ``T0`` moved so that its best-focus temperature is ``bft_degC``.

    Other keyword arguments go to :func:`best_focus_shift_um` (``t_bf_degC``: deprecated name
    of ``bft_degC``).  Returns the new model and its :class:`BestFocus`.
    """
    if "t_bf_degC" in kwargs:
        warn_deprecated_name("t_bf_degC", "bft_degC", "t0_for_best_focus")
        bft_degC = kwargs.pop("t_bf_degC")
    if bft_degC is None:
        raise TypeError("t0_for_best_focus() missing required argument: 'bft_degC'")
    dz, e = best_focus_shift_um(model.optics, **kwargs)
    th = model.thermal
    d = ThermalModel(th.s_um_per_degC, 0.0, th.q_um_per_degC2).temperature_degC(dz)
    new = model.with_t0(float(bft_degC - d))
    return new, BestFocus(float(bft_degC), dz, e)
