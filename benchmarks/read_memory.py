"""Peak memory of reading a large campaign cube: bounded, whatever the cube's size.

The reader reads a cube a block of frames at a time (``os.pread`` from the one open file,
``plato_sim.io.campaign_format.READ_BLOCK_BYTES`` of float32 per block), so its peak memory
is the Python and library baseline plus one block plus the stamps, not the cube converted
whole to float32 (which would be twice the cube's size).

The benchmark writes, in a temporary folder, a one-observation campaign whose source cube is
``--size-gib`` GiB of uint16 frames (``--window`` x ``--window`` px, a star dithered every 2
frames; written in a stream, never held whole in memory), reads it with
:func:`plato_cnn.reader.read_campaign` in a fresh process, and reports that process's peak
RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) next to its RSS before reading.

    python -m benchmarks.read_memory [--quick] [--size-gib 2] [--window 1024] [--json OUT]

``--quick``: a 256 MiB cube.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/read_memory.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    REPO_ROOT,
    machine_info,
    markdown_table,
    parse_with_quick,
    report,
    script_argv,
)

QUICK_GIB = 0.25
BIAS_ADU = 1000
GAIN = 25.0
OBSID, SITE, CAMERA = 1024, "INTA", "bench"

_CHILD = r"""
import json, resource, sys, time
from plato_cnn.reader import read_campaign
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
with open("/proc/self/status") as fh:
    now = [int(l.split()[1]) / 1024.0 for l in fh if l.startswith("VmRSS")][0]
base = rss_mb()
t0 = time.perf_counter()
fr = read_campaign(sys.argv[1])
dt = time.perf_counter() - t0
print(json.dumps({"rss_before_read_mb": now, "peak_before_read_mb": base,
                  "peak_rss_mb": rss_mb(), "read_s": dt, "frames_read": len(fr),
                  "frames_usable": int(fr.usable.sum()), "dropped": dict(fr.drops.frames)}))
"""


def _star(w: int, r: float, c: float, sigma: float = 1.2, flux_e: float = 4e5) -> np.ndarray:
    y, x = np.mgrid[0:w, 0:w]
    g = np.exp(-0.5 * ((y - r) ** 2 + (x - c) ** 2) / sigma**2)
    return flux_e * g / g.sum()


def _ext_header(n: int, w: int, shutter: str):
    from astropy.io import fits

    h = fits.Header()
    for k, v in (
        ("XTENSION", "IMAGE"), ("BITPIX", 16), ("NAXIS", 3), ("NAXIS1", w), ("NAXIS2", w),
        ("NAXIS3", n), ("PCOUNT", 0), ("GCOUNT", 1), ("BSCALE", 1), ("BZERO", 32768),
        ("EXTNAME", "IMAGE_1_E"), ("CCD_ID", 1), ("V_START", 1000), ("H_START", 1000),
        ("EXPTIME", 0.1), ("CYCLETIM", 2.5), ("SHUTTER", shutter), ("FOV_TH", 5.0),
        ("FOV_PHI", 45.0), ("GAIN", GAIN),
    ):  # fmt: skip
        h[k] = v
    return h


def write_cube_streamed(path: Path, n: int, w: int, shutter: str, t0: float, seed: int) -> None:
    """A cube of ``n`` frames written frame by frame (never whole in memory)."""
    from astropy.io import fits

    from plato_sim.io import campaign_format as cf

    prim = fits.PrimaryHDU()
    for k, v in (("DATE-OBS", cf.format_utc(t0)), ("OBSID", OBSID), ("SITE", SITE),
                 ("CAMERA", CAMERA), ("FMTVERS", 1)):  # fmt: skip
        prim.header[k] = v
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write(prim.header.tostring().encode("ascii"))
        fh.write(_ext_header(n, w, shutter).tostring().encode("ascii"))
        star = None
        for k in range(n):
            img = np.full((w, w), float(BIAS_ADU))
            if shutter == "OPEN":
                if k % 2 == 0:
                    star = _star(w, w / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3))
                img += star / GAIN
            img += rng.integers(-3, 4, (w, w))  # ~2 ADU of read noise
            u = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
            fh.write((u.astype(np.int32) - 32768).astype(">i2").tobytes())
        pad = (-fh.tell()) % 2880
        fh.write(b"\0" * pad)


def make_campaign(root: Path, size_gib: float, window: int) -> tuple[Path, int, int]:
    """One observation: HK, a 2-frame background cube and the large source cube."""
    from plato_sim.io import campaign_format as cf

    n = max(2, int(size_gib * 2**30 // (2 * window * window)))
    t0 = cf.parse_utc("2026-03-02T08:00:00")
    d = root / "camp" / cf.obs_dir_name(OBSID, SITE, CAMERA)
    d.mkdir(parents=True)
    write_cube_streamed(d / cf.cube_file_name(OBSID, SITE, 1, t0), 2, window, "CLOSED", t0, 1)
    t1 = t0 + 10.0
    big = d / cf.cube_file_name(OBSID, SITE, 2, t1)
    write_cube_streamed(big, n, window, "OPEN", t1, 2)
    ht = np.arange(t0 - 30.0, t1 + n * 2.5 + 30.0, 10.0)
    cf.write_hk_csv(d / cf.hk_file_name(OBSID, SITE, CAMERA, t0), ht, np.full(ht.size, -80.0))
    return root / "camp", n, big.stat().st_size


def run(size_gib: float, window: int, workdir: str | None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="read_memory_") as tmp:
        t0 = time.perf_counter()
        camp, n, nbytes = make_campaign(Path(tmp), size_gib, window)
        write_s = time.perf_counter() - t0
        r = subprocess.run(
            [sys.executable, "-c", _CHILD, str(camp)],
            capture_output=True, text=True, cwd=REPO_ROOT, check=False,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"reader process failed: {r.stderr[-2000:]}")
        child = json.loads(r.stdout.strip().splitlines()[-1])
    cube_mb = nbytes / 2**20
    return {
        "cube_mb": cube_mb,
        "frames": n,
        "window_px": window,
        "write_s": write_s,
        **child,
        "read_increase_mb": child["peak_rss_mb"] - child["rss_before_read_mb"],
        "whole_cube_float32_mb": 2.0 * cube_mb,
    }


COLUMNS = [
    ("cube_mb", "cube (MiB)", ".0f"),
    ("frames", "frames", "d"),
    ("window_px", "window (px)", "d"),
    ("rss_before_read_mb", "RSS before read (MiB)", ".0f"),
    ("peak_rss_mb", "peak RSS (MiB)", ".0f"),
    ("read_increase_mb", "read adds (MiB)", ".0f"),
    ("whole_cube_float32_mb", "whole cube as float32 (MiB)", ".0f"),
    ("read_s", "read (s)", ".1f"),
    ("frames_read", "frames read", "d"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=2.0, help="source cube size (GiB)")
    ap.add_argument("--window", type=int, default=1024, help="window side (px)")
    ap.add_argument("--workdir", default=None, help="where the temporary campaign goes")
    ap.add_argument("--json", default=None, help="write the result here")
    args = parse_with_quick(ap, argv, {"size_gib": QUICK_GIB})
    row = run(args.size_gib, args.window, args.workdir)
    result = {
        "benchmark": "read_memory",
        "machine": machine_info(),
        "command_line": script_argv(),
        "rows": [row],
    }
    report(result, markdown_table([row], COLUMNS), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
