"""A tiny, fast format-v1 campaign writer for the reader and estimator tests.

Not the emulator (:mod:`plato_sim.scenes.ground_test`): a Gaussian star whose width grows away
from a known best-focus temperature, so that each bad case of the format spec can be built
on disk in milliseconds.  Everything goes through :mod:`plato_sim.io.campaign_format`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import erf

from plato_sim.io import campaign_format as cf

SITE = "INTA"
CAMERA = "testcam"
BIAS_ADU = 1000.0
GAIN = 25.0
T_BEST = -78.7


def star_image(size: int, row: float, col: float, sigma_px: float, flux_e: float) -> np.ndarray:
    """Pixel-integrated circular Gaussian (electrons)."""
    edges = np.arange(size + 1) - 0.5
    s = sigma_px * np.sqrt(2.0)
    fr = np.diff(0.5 * erf((edges - row) / s))
    fc = np.diff(0.5 * erf((edges - col) / s))
    return flux_e * fr[:, None] * fc[None, :]


def sigma_at(t_degC: float) -> float:
    """Star width (pixels) at a TRP1 temperature: sharpest at ``T_BEST``."""
    return 0.45 + 0.09 * abs(t_degC - T_BEST) + 0.004 * (t_degC - T_BEST) ** 2


def make_campaign(
    root: Path,
    temps: tuple[float, ...] = (-90.0, -85.0, -80.0, -75.0, -70.0),
    n_fields: int = 3,
    n_dithers: int = 4,
    frames_per_dither: int = 2,
    window: int = 32,
    flux_e: float = 4e5,
    seed: int = 0,
    hk_noise_degC: float = 0.01,
    hk_drift_degC: dict | None = None,
) -> Path:
    """Write a campaign under ``root / 'camp'`` and return that folder."""
    rng = np.random.default_rng(seed)
    camp = Path(root) / "camp"
    camp.mkdir(parents=True, exist_ok=True)
    t_cursor = cf.parse_utc("2026-01-05T10:00:00")
    hk_drift_degC = hk_drift_degC or {}
    for ip, temp in enumerate(temps):
        obsid = 1024 + 11 * ip
        d = camp / cf.obs_dir_name(obsid, SITE, CAMERA)
        d.mkdir(exist_ok=True)
        hk0 = t_cursor
        t_cursor += 60.0
        counter = 1
        for f in range(n_fields):
            theta, phi = 3.0 + 4.0 * f, 30.0 + 50.0 * f
            keys = {
                "CCD_ID": 1 + f % 4,
                "V_START": 1000 + 10 * f,
                "H_START": 2000,
                "EXPTIME": 0.1,
                "CYCLETIM": 2.0,
                "FOV_TH": theta,
                "FOV_PHI": phi,
                "GAIN": GAIN,
            }
            ext = cf.image_ext_name(1 + f % 4, "E")
            bg = BIAS_ADU + rng.normal(0, 2.0, (2, window, window))
            src = []
            for _ in range(n_dithers):
                r = window / 2 + rng.uniform(-3, 3)
                c = window / 2 + rng.uniform(-3, 3)
                img = star_image(window, r, c, sigma_at(temp), flux_e)
                for _ in range(frames_per_dither):
                    noisy = rng.poisson(img) + rng.normal(0, 50.0, img.shape)
                    src.append(BIAS_ADU + noisy / GAIN)
            for shutter, data in (("CLOSED", bg), ("OPEN", np.asarray(src))):
                raw = np.clip(np.rint(data), 0, 65535).astype(np.uint16)
                prim = {"DATE-OBS": cf.format_utc(t_cursor), "OBSID": obsid, "SITE": SITE}
                prim["CAMERA"] = CAMERA
                cf.write_cube(
                    d / cf.cube_file_name(obsid, SITE, counter, t_cursor),
                    prim,
                    [(ext, {**keys, "SHUTTER": shutter}, raw)],
                )
                counter += 1
                t_cursor += raw.shape[0] * 2.0 + 5.0
        ht = np.arange(hk0, t_cursor + 30.0, 5.0)
        drift = hk_drift_degC.get(obsid, 0.0) * (ht - ht[0]) / (ht[-1] - ht[0])
        trp1 = temp + drift + hk_noise_degC * rng.standard_normal(ht.size)
        cf.write_hk_csv(d / cf.hk_file_name(obsid, SITE, CAMERA, hk0), ht, trp1)
        t_cursor += 3600.0
    return camp


def obs_dirs(camp: Path) -> list[Path]:
    """Observation folders in OBSID order."""
    return sorted(p for p in camp.iterdir() if p.is_dir())


def cubes(obs_dir: Path) -> list[Path]:
    """Cube files of an observation in COUNTER order."""
    return sorted(obs_dir.glob("*_cube.fits"))
