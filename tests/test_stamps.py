"""Stamp cutting and the CCD -> focal-plane re-orientation."""

import numpy as np
import pytest

from plato_sim.optics.camera import PLATO_NORMAL_CAMERA as CAM
from plato_sim.stamps import ccd_to_focal_plane_orientation, extract_stamp


@pytest.mark.parametrize("ccd", [1, 2, 3, 4])
def test_reorientation_follows_the_ccd_geometry(ccd):
    # a displacement of +2 px along focal-plane x and +1 px along y, seen on this CCD
    x0, y0 = CAM.ccd_to_focal_plane(2000.0, 2000.0, ccd)
    p = CAM.pixel_um * 1e-3
    r1, c1 = CAM.focal_plane_to_ccd(x0 + 2 * p, y0 + 1 * p, ccd)
    dr, dk = int(round(float(r1) - 2000.0)), int(round(float(c1) - 2000.0))
    st = np.zeros((1, 32, 32))
    st[0, 16 + dr, 16 + dk] = 1.0
    out = ccd_to_focal_plane_orientation(st, [ccd], CAM.ccd_orientation_deg)
    assert out[0, 16 + 1, 16 + 2] == 1.0 and out.sum() == 1.0


def test_reorientation_keeps_the_centre_and_mixed_ccds():
    rng = np.random.default_rng(0)
    st = rng.random((4, 32, 32))
    out = ccd_to_focal_plane_orientation(st, [1, 2, 3, 4], CAM.ccd_orientation_deg)
    assert np.allclose(out[:, 16, 16], st[:, 16, 16])
    assert np.array_equal(out[2], st[2])  # CCD 3 has orientation 0
    assert np.allclose(out[0, 1:, 1:], st[0, ::-1, ::-1][:-1, :-1])  # 180 deg about (16, 16)


def test_extract_stamp_centres_on_the_centroid_pixel():
    w = np.zeros((40, 40))
    w[20, 11] = 100.0
    w[20, 12] = 60.0  # centroid at column 11.375 -> pixel 11
    cut = extract_stamp(w, 32)
    assert (cut.centre_row, cut.centre_col) == (20, 11)
    assert cut.stamp[16, 16] == 100.0 and cut.stamp[16, 17] == 60.0
    assert not cut.valid[0, 0]  # the window's left edge is 11 px away: beyond it is padding
    assert cut.centroid_col == pytest.approx(11.375)
