"""examples/convert_own_layout.py: a plain NumPy layout written as a campaign (format v1) and
read back by the campaign reader."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from plato_cnn.reader import read_campaign
from plato_sim.errors import DataError, ParameterError
from plato_sim.io import campaign_format as cf
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, ccd_of_field
from plato_sim.stamps import background_adu

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "convert_own_layout.py"


def _load():
    spec = importlib.util.spec_from_file_location("example_convert_own_layout", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ex = _load()


def _expected_e(npz: Path) -> dict[float, np.ndarray]:
    """Frame start time -> background-subtracted window (e-), as the format defines it."""
    z = np.load(npz)
    # without GAIN the format's nominal 25 e-/ADU applies (written out from the document)
    gain = np.float32(z["gain_e_per_adu"]) if "gain_e_per_adu" in z else np.float32(25.0)
    out = {}
    for frame, t, k in zip(z["frames_adu"], z["time_unix_s"], z["window"], strict=True):
        bg = background_adu(z["bias_frames_adu"][z["bias_window"] == k])
        out[round(float(t), 3)] = (frame.astype(np.float32) - bg) * gain
    return out


def _edit(src: Path, dst: Path, drop: tuple = (), **changes) -> None:
    """Copy an observation file with keys dropped or replaced."""
    z = dict(np.load(src))
    for k in drop:
        z.pop(k)
    z.update(changes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **z)


def test_demo_writes_a_campaign_the_reader_reads(tmp_path, capsys):
    in_dir, out = tmp_path / "in", tmp_path / "campaign"
    assert ex.main(["--demo", "--in", str(in_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "8 source frames read (8 usable, 0 dropped)" in printed[1]

    fr = read_campaign(out, strict=True)
    n_fields = len(ex.DEMO_THETA_DEG)
    assert len(fr) == len(ex.DEMO_OBSIDS) * n_fields * ex.DEMO_FRAMES_PER_FIELD == 8
    assert fr.usable.all() and fr.drops.n_frames == 0
    assert (fr.camera, fr.site) == ("democam", "DEMO")
    assert [o.obsid for o in fr.observations] == list(ex.DEMO_OBSIDS)
    temps = [o.temperature_mean_degC for o in fr.observations]
    np.testing.assert_allclose(temps, ex.DEMO_PLATEAUX_DEGC, atol=0.02)

    # field positions, CCDs and star positions on the CCD
    ccd, row, col = ccd_of_field(
        PLATO_NORMAL_CAMERA, np.array(ex.DEMO_THETA_DEG), np.array(ex.DEMO_PHI_DEG)
    )
    for k in range(n_fields):
        sel = fr.field_theta_deg == ex.DEMO_THETA_DEG[k]
        assert sel.sum() == len(ex.DEMO_OBSIDS) * ex.DEMO_FRAMES_PER_FIELD
        np.testing.assert_allclose(fr.field_phi_deg[sel], ex.DEMO_PHI_DEG[k])
        assert np.all(fr.ccd[sel] == ccd[k])
        np.testing.assert_allclose(fr.row[sel], row[k], atol=0.2)
        np.testing.assert_allclose(fr.col[sel], col[k], atol=0.2)

    # stamps in electrons: the input's ADU minus its bias, times the gain
    expected = {}
    for p in sorted(in_dir.glob("*.npz")):
        expected.update(_expected_e(p))
    for stamp, t in zip(fr.stamps, fr.time_s, strict=True):
        window_e = expected[round(float(t), 3)]
        assert stamp.max() == pytest.approx(float(window_e.max()), rel=1e-6)
        assert stamp.sum() == pytest.approx(ex.DEMO_FLUX_E, rel=0.03)

    # the cubes: one closed-shutter cube before each source cube, GAIN written
    cubes = sorted((out / "01024_DEMO_democam").glob("*_cube.fits"))
    shutters = [fits.getheader(c, 1)["SHUTTER"] for c in cubes]
    assert shutters == [cf.SHUTTER_CLOSED, cf.SHUTTER_OPEN] * n_fields
    assert fits.getheader(cubes[1], 1)["GAIN"] == ex.DEMO_GAIN_E_PER_ADU


def test_without_gain_the_nominal_gain_applies(tmp_path):
    demo, in_dir = tmp_path / "demo", tmp_path / "in"
    for p in ex.write_demo_input(demo, seed=1):
        _edit(p, in_dir / p.name, drop=("gain_e_per_adu", "obsid"))
    n = ex.convert(in_dir, tmp_path / "c", "cam", "LAB-1")
    assert n == {"observations": 2, "cubes": 8, "source_frames": 8}
    obs_dirs = sorted((tmp_path / "c").iterdir())
    assert [d.name for d in obs_dirs] == ["00001_LAB-1_cam", "00002_LAB-1_cam"]
    assert "GAIN" not in fits.getheader(sorted(obs_dirs[0].glob("*_cube.fits"))[1], 1)
    fr = read_campaign(tmp_path / "c", strict=True)
    expected = {}
    for p in sorted(in_dir.glob("*.npz")):
        expected.update(_expected_e(p))
    peaks = [expected[round(float(t), 3)].max() for t in fr.time_s]
    np.testing.assert_allclose(fr.stamps.max(axis=(1, 2)), peaks, rtol=1e-6)


def test_uneven_frame_times_make_several_source_cubes(tmp_path):
    demo, in_dir = tmp_path / "demo", tmp_path / "in"
    p = ex.write_demo_input(demo)[0]
    z = np.load(p)
    t = z["time_unix_s"].copy()
    t[1] += 1.0  # window 0: its two frames 3.5 s apart
    last = np.flatnonzero(z["window"] == 1)[-1]
    _edit(
        p,
        in_dir / p.name,
        frames_adu=np.concatenate([z["frames_adu"], z["frames_adu"][last:]]),
        time_unix_s=np.concatenate([t, [t[last] + 10.0]]),  # window 1: a third frame, late
        window=np.concatenate([z["window"], [1]]),
    )
    ex.convert(in_dir, tmp_path / "c", "cam", "LAB")
    cubes = sorted(next((tmp_path / "c").iterdir()).glob("*_cube.fits"))
    heads = [fits.getheader(c, 1) for c in cubes]
    assert [(h["SHUTTER"], h["NAXIS3"]) for h in heads] == [
        ("CLOSED", 2), ("OPEN", 2), ("CLOSED", 2), ("OPEN", 2), ("OPEN", 1),
    ]  # fmt: skip
    assert heads[1]["CYCLETIM"] == pytest.approx(3.5)
    fr = read_campaign(tmp_path / "c", strict=True)
    assert len(fr) == 5
    np.testing.assert_allclose(np.sort(fr.time_s), np.sort(np.r_[t, t[last] + 10.0]), atol=1e-5)


BAD_INPUT = [
    (lambda z: {"drop": ("bias_frames_adu",)}, r"missing key\(s\) \['bias_frames_adu'\]"),
    (lambda z: {"hk_trp1_degC": z["hk_trp1_degC"] + 273.15}, r"kelvin.*not a temperature"),
    (lambda z: {"frames_adu": z["frames_adu"].astype(np.int32) - 1000}, "raw ADU must lie"),
    (lambda z: {"bias_frames_adu": z["bias_frames_adu"] // 100}, "not a bias"),
    (lambda z: {"ccd": np.array([4, 5])}, r"ccd: values must be integers 1 \.\.\. 4"),
    (lambda z: {"row0_px": np.array([4490, 10])}, r"row0_px: .* 0 \.\.\. 4470"),
    (lambda z: {"bias_window": z["bias_window"] * 0}, "window 1 has source frames but no"),
]


@pytest.mark.parametrize(("change", "match"), BAD_INPUT)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, change, match):
    demo, in_dir = tmp_path / "demo", tmp_path / "in"
    p = ex.write_demo_input(demo)[0]
    _edit(p, in_dir / p.name, **change(np.load(p)))
    with pytest.raises(DataError, match=match) as exc:
        ex.convert(in_dir, tmp_path / "c", "cam", "LAB")
    assert "\n" not in str(exc.value) and str(in_dir / p.name) in str(exc.value)
    assert not (tmp_path / "c").exists()


def test_bad_names_and_folders(tmp_path):
    ex.write_demo_input(tmp_path / "in")
    with pytest.raises(ParameterError, match="--camera 'my_cam'"):
        ex.convert(tmp_path / "in", tmp_path / "c", "my_cam", "LAB")
    with pytest.raises(ParameterError, match="--site 'LAB_1'"):
        ex.convert(tmp_path / "in", tmp_path / "c", "cam", "LAB_1")
    with pytest.raises(ParameterError, match="not an empty folder"):
        ex.convert(tmp_path / "in", tmp_path / "in", "cam", "LAB")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no observation file"):
        ex.convert(tmp_path / "empty", tmp_path / "c", "cam", "LAB")


def test_command_line_help_and_error_exit(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        ex.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert all(opt in text for opt in ("--in", "--out", "--camera", "--site", "--demo"))
    (tmp_path / "in").mkdir()
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--in", str(tmp_path / "in"), "--out",
         str(tmp_path / "c"), "--camera", "cam", "--site", "LAB"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no observation file" in r.stderr
