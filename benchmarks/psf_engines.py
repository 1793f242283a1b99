"""Cross-check and timing of the three PSF engines.

1. Agreement.  For dz_th in {-150, -50, 0, 25, 50, 100, 150} um x theta in {0, 9, 18} deg
   (phi = 30 deg, star on a pixel centre) and a few random (theta, phi, dz_th, sub-pixel
   offset), monochromatic 700 nm and polychromatic (OGSE spectrum, 10 wavelengths), the
   32x32 stamp of each engine (fast: the production default, float32, fov_px=16) and the EEF
   (2x2 / 10x10).  Criteria: |EEF_fast - EEF_poppy| <= 0.01, |EEF_fast - EEF_galsim| <= 0.01,
   every pixel within 1 % of the total flux.  The fast engine computes a periodic field of
   ``fov_px`` and zeroes pixels farther than fov_px/2 from the star: pixels are compared
   within that window, and the reference flux outside it is reported (``miss``).
2. Speed, polychromatic (10 wavelengths) 32x32 stamps per second, on this machine, one run:
   GalSim ``ChromaticOpticalPSF``, a sum of 10 GalSim ``OpticalPSF``, poppy, and the fast
   engine (a) every stamp its own optical state (field and dz) and (b) one optical state
   serving ``--offsets`` sub-pixel offsets (``otf`` + ``stamps_from_otf``).
   ``ChromaticOpticalPSF`` keeps the optical path fixed over the band, so the timing set
   uses the design without chromatic focal shift for *every* engine (same work for all);
   its accuracy against the GalSim sum on those states is reported with the timing.
3. Peak resident memory of a batch of 4,096 fast stamps, in a fresh subprocess.

Targets: fast >= 30x ChromaticOpticalPSF for distinct states, >= 100x for stamps,
at the agreement above; peak memory of a 4,096-stamp batch < 4 GB.

Timing on a shared machine: each reference stamp is timed on its own and the fastest counts;
the fast engine counts the best of 3 batch runs; torch uses the faster of 1 and 2 threads on a
short probe (``--threads auto``; with other jobs running, 2 OpenMP threads can be 10x slower
than 1).  The load average at the start and end is stored with the figures.

    python -m benchmarks.psf_engines [--quick] [--json OUT]
"""

from __future__ import annotations

import os

# BLAS threads spinning next to torch's FFT threads steal CPU (docs/facts.md); set before
# numpy is imported.  poppy's MFT (numpy matmul) therefore runs on one thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

if __package__ in (None, ""):  # run as a script: python benchmarks/psf_engines.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_info as common_machine_info  # noqa: E402
from benchmarks._common import machine_line, markdown_table, write_json  # noqa: E402
from plato_sim.optics.model import OpticalModel  # noqa: E402
from plato_sim.optics.spectra import Spectrum, monochromatic, ogse_spectrum  # noqa: E402
from plato_sim.optics.wavefront import FieldAberrations  # noqa: E402
from plato_sim.psf import FastEngine  # noqa: E402
from plato_sim.psf.galsim_engine import GalSimEngine  # noqa: E402
from plato_sim.psf.poppy_engine import PoppyEngine  # noqa: E402
from plato_sim.truth.eef import eef  # noqa: E402

SIZE = 32
EEF_TOL = 0.01
PIX_TOL = 0.01
DZ_GRID_UM = (-150.0, -50.0, 0.0, 25.0, 50.0, 100.0, 150.0)
THETA_GRID_DEG = (0.0, 9.0, 18.0)
PHI_GRID_DEG = 30.0
#: Nodes of the fast engine's Gauss rule over the OGSE band (plato_sim.optics.spectra), scored
#: against the references' 10 midpoint samples
GAUSS_N = 4


# ---------------------------------------------------------------- machine
def machine_info() -> dict:
    """The common machine record plus the reference libraries' versions."""
    import galsim
    import poppy

    return common_machine_info(galsim=galsim.__version__, poppy=poppy.__version__)


# ---------------------------------------------------------------- agreement
def fast_window(offset_px: np.ndarray, fov_px: int, size: int = SIZE) -> np.ndarray:
    """Pixels the fast engine computes: centre within (-fov/2, fov/2] of the star, per axis."""
    pos = np.arange(size) - size // 2
    half = fov_px / 2.0
    xs = pos - offset_px[0]
    ys = pos - offset_px[1]
    return ((ys > -half) & (ys <= half))[:, None] & ((xs > -half) & (xs <= half))[None, :]


def agreement_states(quick: bool, seed: int) -> list[dict]:
    """The grid (star on a pixel centre) and a few random states."""
    dzs = (-150.0, 0.0, 150.0) if quick else DZ_GRID_UM
    thetas = (0.0, 18.0) if quick else THETA_GRID_DEG
    states = [
        {"kind": "grid", "theta_deg": t, "phi_deg": PHI_GRID_DEG, "dz_um": d, "off": (0.0, 0.0)}
        for t in thetas
        for d in dzs
    ]
    rng = np.random.default_rng(seed)
    for _ in range(2 if quick else 5):
        states.append(
            {
                "kind": "random",
                "theta_deg": float(18.89 * np.sqrt(rng.uniform())),
                "phi_deg": float(rng.uniform(0.0, 360.0)),
                "dz_um": float(rng.uniform(-150.0, 150.0)),
                "off": (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5))),
            }
        )
    return states


def _against_references(name: str, stamp: np.ndarray, poppy, galsim, win) -> dict:
    """EEF and worst-pixel differences of a fast stamp from the poppy and GalSim ``(stamp,
    EEF)`` pairs, over the pixels the fast engine computes (``win``)."""
    e = float(eef(stamp))
    out = {}
    for ref_name, (ref, e_ref) in (("poppy", poppy), ("galsim", galsim)):
        out[f"d_eef_{name}_{ref_name}"] = e - e_ref
        out[f"maxpix_{name}_{ref_name}"] = float(np.abs(stamp - ref)[win].max())
    return out


def run_agreement(quick: bool, seed: int, log, fov_px: int = 16) -> list[dict]:
    """One row per (spectrum, state): EEFs, differences, pixel differences, fluxes."""
    optics = OpticalModel()
    fast = FastEngine(fov_px=fov_px)
    poppy_eng = PoppyEngine()
    galsim_eng = GalSimEngine()
    rows = []
    spectra = [("mono700", monochromatic(700.0)), ("ogse10", ogse_spectrum(optics.camera, 10))]
    sp_gauss = ogse_spectrum(optics.camera, GAUSS_N, rule="gauss")
    for sp_name, sp in spectra:
        for st in agreement_states(quick, seed):
            z = optics.zernikes_nm(
                st["theta_deg"], st["phi_deg"], st["dz_um"], sp.wavelengths_array_nm
            )
            off = np.asarray([st["off"]])
            t0 = time.perf_counter()
            a = fast.render(z, sp, off, SIZE)[0]
            t1 = time.perf_counter()
            p = poppy_eng.render(z, sp, off, SIZE)[0]
            t2 = time.perf_counter()
            g = galsim_eng.render(z, sp, off, SIZE)[0]
            t3 = time.perf_counter()
            win = fast_window(off[0], fast.fov_px)
            e_f, e_p, e_g = (float(eef(x)) for x in (a, p, g))
            gauss_cols = {}
            if sp.n > 1:
                # the same band by the fast engine's Gauss rule, against the 10-sample references
                zg = optics.zernikes_nm(
                    st["theta_deg"], st["phi_deg"], st["dz_um"], sp_gauss.wavelengths_array_nm
                )
                ag = fast.render(zg, sp_gauss, off, SIZE)[0]
                e_fg = float(eef(ag))
                gauss_cols = {
                    "eef_fast_gauss": e_fg,
                    "d_eef_fast_gauss_fast": e_fg - e_f,
                    **_against_references("fast_gauss", ag, (p, e_p), (g, e_g), win),
                }
            row = {
                "spectrum": sp_name,
                **{k: v for k, v in st.items() if k != "off"},
                "off_x_px": st["off"][0],
                "off_y_px": st["off"][1],
                "eef_fast": e_f,
                "eef_poppy": e_p,
                "eef_galsim": e_g,
                **_against_references("fast", a, (p, e_p), (g, e_g), win),
                "d_eef_poppy_galsim": e_p - e_g,
                "maxpix_poppy_galsim": float(np.abs(p - g).max()),
                "flux_fast": float(a.sum()),
                "flux_poppy": float(p.sum()),
                "flux_galsim": float(g.sum()),
                "miss_fast_window_poppy": float(p[~win].sum()),
                "miss_fast_window_galsim": float(g[~win].sum()),
                "time_fast_s": t1 - t0,
                "time_poppy_s": t2 - t1,
                "time_galsim_s": t3 - t2,
                **gauss_cols,
            }
            row["pass"] = all(
                abs(row.get(f"d_eef_{a}_{b}", 0.0)) <= EEF_TOL
                and row.get(f"maxpix_{a}_{b}", 0.0) <= PIX_TOL
                for a in ("fast", "fast_gauss")
                for b in ("poppy", "galsim")
            )
            rows.append(row)
            log(
                f"  {sp_name:8s} th={st['theta_deg']:5.2f} phi={st['phi_deg']:6.1f} "
                f"dz={st['dz_um']:7.1f} off=({st['off'][0]:+.2f},{st['off'][1]:+.2f})  "
                f"EEF f/p/g {e_f:.4f} {e_p:.4f} {e_g:.4f}  "
                f"dpix f-p {row['maxpix_fast_poppy']:.1e} f-g {row['maxpix_fast_galsim']:.1e}  "
                f"{'ok' if row['pass'] else 'FAIL'}"
            )
    return rows


# ---------------------------------------------------------------- timing
def timing_states(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random field positions and thermal focal shifts (seeded)."""
    rng = np.random.default_rng(seed)
    theta = 18.89 * np.sqrt(rng.uniform(size=n))
    phi = rng.uniform(0.0, 360.0, n)
    dz = rng.uniform(-150.0, 150.0, n)
    return theta, phi, dz


def _time_reference(engine, z: np.ndarray, sp: Spectrum, offs: np.ndarray) -> tuple[dict, list]:
    """Each stamp timed on its own; the minimum is the least disturbed by other jobs."""
    stamps, times = [], []
    for b in range(z.shape[0]):
        t0 = time.perf_counter()
        stamps.append(engine.render(z[b : b + 1], sp, offs[b : b + 1], SIZE)[0])
        times.append(time.perf_counter() - t0)
    t_min = float(np.min(times))
    stats = {
        "n": len(times),
        "s_per_stamp": t_min,
        "s_per_stamp_median": float(np.median(times)),
        "stamps_per_s": 1.0 / t_min,
    }
    return stats, stamps


def _best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_timing(quick: bool, seed: int, n_offsets: int, log, fov_px: int = 16) -> dict:
    """Stamps per second of every engine on the same polychromatic states."""
    base = OpticalModel()
    # ChromaticOpticalPSF cannot vary the path difference with wavelength: time every engine
    # on the design without chromatic focal shift.
    optics = replace(base, design=replace(FieldAberrations(), chrom_quad_um=0.0))
    sp = ogse_spectrum(optics.camera, 10)
    rng = np.random.default_rng(seed + 1)
    n_fast = 128 if quick else 256
    repeats = 3
    theta, phi, dz = timing_states(n_fast, seed)
    z = optics.zernikes_nm(theta, phi, dz, sp.wavelengths_array_nm)
    offs = rng.uniform(-0.5, 0.5, size=(n_fast, 2))
    n_chrom, n_sum, n_poppy = (3, 2, 1) if quick else (8, 4, 2)
    out: dict = {"n_wavelengths": sp.n, "stamp_px": SIZE}

    chrom = GalSimEngine(mode="chromatic")
    stats, s_chrom = _time_reference(chrom, z[:n_chrom], sp, offs[:n_chrom])
    out["galsim_chromatic"] = {
        **stats,
        "config": (
            "ChromaticOpticalPSF(lam=500 nm, oversampling=1.5), GSParams(folding_threshold="
            "5e-3), convolved with the diffusion Gaussian, drawn method='auto' on 40x40 px "
            "cropped to 32x32, SampleIntegrator at the 10 wavelengths with the spectrum's "
            "weights"
        ),
    }
    log(f"  GalSim ChromaticOpticalPSF: {stats['s_per_stamp']:.3f} s/stamp (min of {n_chrom})")

    gsum = GalSimEngine()
    stats, s_sum = _time_reference(gsum, z[:n_sum], sp, offs[:n_sum])
    out["galsim_sum"] = {
        **stats,
        "config": "10 OpticalPSF(pad_factor=3, oversampling=1.5) summed, method='auto'",
    }
    log(f"  GalSim sum of 10 OpticalPSF: {stats['s_per_stamp']:.3f} s/stamp (min of {n_sum})")

    # accuracy of ChromaticOpticalPSF against the sum of OpticalPSFs on the shared states
    k = min(n_chrom, n_sum)
    d_eef = [float(eef(s_chrom[i]) - eef(s_sum[i])) for i in range(k)]
    d_pix = [float(np.abs(s_chrom[i] - s_sum[i]).max()) for i in range(k)]
    out["galsim_chromatic"]["accuracy_vs_sum"] = {
        "max_abs_d_eef": float(np.max(np.abs(d_eef))),
        "max_abs_d_pixel": float(np.max(d_pix)),
        "flux_chromatic": [float(s.sum()) for s in s_chrom[:k]],
        "flux_sum": [float(s.sum()) for s in s_sum[:k]],
    }

    pop = PoppyEngine()
    stats, _ = _time_reference(pop, z[:n_poppy], sp, offs[:n_poppy])
    out["poppy"] = {
        **stats,
        "config": (
            f"oversample={pop.oversample}, pupil npix={pop.npix_for(sp, SIZE)}, field "
            f"{pop._field_px(SIZE)} px, 1 BLAS thread"
        ),
    }
    log(f"  poppy: {stats['s_per_stamp']:.3f} s/stamp (min of {n_poppy})")

    fast = FastEngine(fov_px=fov_px)
    n_states = max(fast.chunk, n_fast // n_offsets)
    off_k = rng.uniform(-0.5, 0.5, size=(n_states, n_offsets, 2))

    def shared() -> None:
        for s in range(0, n_states, fast.chunk):
            e = slice(s, s + fast.chunk)
            o = fast.otf(z[e], sp)
            fast.stamps_from_otf(o, sp, off_k[e], SIZE).cpu().numpy()

    sp_g = ogse_spectrum(optics.camera, GAUSS_N, rule="gauss")
    z_g = optics.zernikes_nm(theta, phi, dz, sp_g.wavelengths_array_nm)
    with torch.no_grad():
        fast.render(z[:8], sp, offs[:8], SIZE)  # warm-up: grids and caches
        fast.render(z_g[:8], sp_g, offs[:8], SIZE)
        t_distinct = _best_of(lambda: fast.render(z, sp, offs, SIZE), repeats)
        t_shared = _best_of(shared, repeats)
        t_gauss = _best_of(lambda: fast.render(z_g, sp_g, offs, SIZE), repeats)
    out["fast_distinct"] = {
        "n": n_fast,
        "stamps_per_s": n_fast / t_distinct,
        "s_per_stamp": t_distinct / n_fast,
        "repeats": repeats,
        "config": f"FastEngine float32, fov_px={fast.fov_px}, chunk={fast.chunk}, "
        f"{torch.get_num_threads()} torch threads; every stamp its own field and dz; "
        f"best of {repeats} runs",
    }
    out["fast_shared"] = {
        "n": n_states * n_offsets,
        "offsets_per_state": n_offsets,
        "stamps_per_s": n_states * n_offsets / t_shared,
        "states_per_s": n_states / t_shared,
        "s_per_stamp": t_shared / (n_states * n_offsets),
        "repeats": repeats,
        "config": f"otf() + stamps_from_otf(), {n_offsets} sub-pixel offsets per optical state; "
        f"best of {repeats} runs",
    }
    out["fast_distinct_gauss"] = {
        "n": n_fast,
        "stamps_per_s": n_fast / t_gauss,
        "s_per_stamp": t_gauss / n_fast,
        "repeats": repeats,
        "n_wavelengths": sp_g.n,
        "wavelengths_nm": list(sp_g.wavelengths_nm),
        "config": f"as fast_distinct, the OGSE band by its {sp_g.n}-node Gauss rule "
        "(plato_sim.optics.spectra.ogse_spectrum(rule='gauss'))",
    }
    # GalSim given the same nodes: the quadrature's gain is not the engine's
    stats, _ = _time_reference(chrom, z_g[:n_chrom], sp_g, offs[:n_chrom])
    out["galsim_chromatic_gauss"] = {
        **stats,
        "n_wavelengths": sp_g.n,
        "config": "as galsim_chromatic, SampleIntegrator at the same Gauss nodes and weights",
    }
    log(f"  fast, distinct states: {n_fast / t_distinct:.1f} stamps/s ({n_fast} states)")
    log(
        f"  fast, distinct states, {sp_g.n} Gauss nodes: {n_fast / t_gauss:.1f} stamps/s; "
        f"GalSim ChromaticOpticalPSF at the same nodes {stats['s_per_stamp']:.3f} s/stamp"
    )
    log(
        f"  fast, {n_offsets} offsets per state: {n_states * n_offsets / t_shared:.1f} stamps/s "
        f"({n_states} states)"
    )
    # references: fastest single stamp; fast: best of `repeats` batches (both least disturbed)
    ref_c = out["galsim_chromatic"]["stamps_per_s"]
    ref_s = out["galsim_sum"]["stamps_per_s"]
    out["ratios"] = {
        "distinct_vs_galsim_chromatic": out["fast_distinct"]["stamps_per_s"] / ref_c,
        "shared_vs_galsim_chromatic": out["fast_shared"]["stamps_per_s"] / ref_c,
        "distinct_vs_galsim_sum": out["fast_distinct"]["stamps_per_s"] / ref_s,
        "shared_vs_galsim_sum": out["fast_shared"]["stamps_per_s"] / ref_s,
        "distinct_vs_poppy": out["fast_distinct"]["stamps_per_s"] / out["poppy"]["stamps_per_s"],
        "shared_vs_poppy": out["fast_shared"]["stamps_per_s"] / out["poppy"]["stamps_per_s"],
        # the band integral of the reference (10 samples) by the fast engine's Gauss rule:
        # the same stamp to |dEEF| <= 0.01 (agreement rows d_eef_fast_gauss_*)
        "distinct_gauss_vs_galsim_chromatic": out["fast_distinct_gauss"]["stamps_per_s"] / ref_c,
        # both engines on the same Gauss nodes
        "distinct_gauss_vs_galsim_chromatic_gauss": out["fast_distinct_gauss"]["stamps_per_s"]
        / out["galsim_chromatic_gauss"]["stamps_per_s"],
    }
    out["targets"] = {
        "distinct_ge_30x_chromatic": out["ratios"]["distinct_vs_galsim_chromatic"] >= 30.0,
        "shared_ge_100x_chromatic": out["ratios"]["shared_vs_galsim_chromatic"] >= 100.0,
        "distinct_gauss_ge_100x_chromatic": out["ratios"]["distinct_gauss_vs_galsim_chromatic"]
        >= 100.0,
    }
    return out


def probe_threads(n: int = 16) -> dict[int, float]:
    """Seconds per distinct polychromatic state of the fast engine with 1 and 2 threads."""
    optics = OpticalModel()
    sp = ogse_spectrum(optics.camera, 10)
    theta, phi, dz = timing_states(n, 99)
    z = optics.zernikes_nm(theta, phi, dz, sp.wavelengths_array_nm)
    eng = FastEngine()
    eng.render(z[:4], sp, None, SIZE)
    out = {}
    for t in (1, 2):
        torch.set_num_threads(t)
        out[t] = _best_of(lambda: eng.render(z, sp, None, SIZE), 2) / n
    return out


# ---------------------------------------------------------------- memory
_MEMORY_CHILD = r"""
import os, sys, json
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np, torch
from plato_sim.psf import FastEngine
from plato_sim.optics.model import OpticalModel
from plato_sim.optics.spectra import ogse_spectrum
mode, n = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]))
optics = OpticalModel()
sp = ogse_spectrum(optics.camera, 10)
rng = np.random.default_rng(7)
eng = FastEngine()
def hwm_mb():
    # VmHWM: peak RSS of this process image (reset at exec, unlike ru_maxrss, which a
    # child inherits from the parent at fork)
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
rss0 = hwm_mb()
if mode == "distinct":
    th = 18.89 * np.sqrt(rng.uniform(size=n)); ph = rng.uniform(0, 360, n)
    dz = rng.uniform(-150, 150, n)
    z = optics.zernikes_nm(th, ph, dz, sp.wavelengths_array_nm)
    st = eng.render(z, sp, rng.uniform(-0.5, 0.5, (n, 2)), 32)
else:
    k = 16
    b = n // k
    th = 18.89 * np.sqrt(rng.uniform(size=b)); ph = rng.uniform(0, 360, b)
    dz = rng.uniform(-150, 150, b)
    z = optics.zernikes_nm(th, ph, dz, sp.wavelengths_array_nm)
    st = eng.render(z, sp, rng.uniform(-0.5, 0.5, (b, k, 2)), 32)
rss1 = hwm_mb()
print(json.dumps({"n_stamps": int(np.prod(st.shape[:-2])), "stamps_mb": st.nbytes / 1e6,
                  "rss_after_imports_mb": rss0, "peak_rss_mb": rss1}))
"""


def run_memory(quick: bool, threads: int, log) -> dict:
    """Peak RSS of a fresh process rendering 4,096 stamps (two ways; one with ``quick``)."""
    out = {}
    for mode in ("shared16",) if quick else ("distinct", "shared16"):
        res = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, mode, "4096", str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
        log(
            f"  {mode:9s}: {out[mode]['n_stamps']} stamps, peak RSS "
            f"{out[mode]['peak_rss_mb']:.0f} MB (after imports "
            f"{out[mode]['rss_after_imports_mb']:.0f} MB)"
        )
    out["target_lt_4gb"] = all(v["peak_rss_mb"] < 4096 for v in out.values())
    return out


# ---------------------------------------------------------------- report
def print_agreement(rows: list[dict]) -> None:
    """The agreement table."""
    hdr = (
        f"{'spectrum':8s} {'kind':6s} {'th_deg':>6s} {'phi':>6s} {'dz_um':>7s} {'dx':>6s} "
        f"{'dy':>6s} {'EEF_fast':>8s} {'EEF_pop':>8s} {'EEF_gs':>8s} {'dF-P':>8s} {'dF-G':>8s} "
        f"{'pixF-P':>7s} {'pixF-G':>7s} {'missP':>7s} {'fluxF':>7s} {'fluxP':>7s} "
        f"{'fluxG':>7s} ok"
    )
    print(hdr)
    for r in rows:
        print(
            f"{r['spectrum']:8s} {r['kind']:6s} {r['theta_deg']:6.2f} {r['phi_deg']:6.1f} "
            f"{r['dz_um']:7.1f} {r['off_x_px']:+6.2f} {r['off_y_px']:+6.2f} "
            f"{r['eef_fast']:8.4f} {r['eef_poppy']:8.4f} {r['eef_galsim']:8.4f} "
            f"{r['d_eef_fast_poppy']:+8.4f} {r['d_eef_fast_galsim']:+8.4f} "
            f"{r['maxpix_fast_poppy']:7.1e} {r['maxpix_fast_galsim']:7.1e} "
            f"{r['miss_fast_window_poppy']:7.1e} {r['flux_fast']:7.4f} {r['flux_poppy']:7.4f} "
            f"{r['flux_galsim']:7.4f} {'yes' if r['pass'] else 'NO'}"
        )


def summarise_agreement(rows: list[dict]) -> dict:
    """Worst cases over all rows."""

    def worst(key):
        r = max((r for r in rows if key in r), key=lambda r: abs(r[key]))
        return {
            "value": r[key],
            "where": f"{r['spectrum']} theta={r['theta_deg']:.2f} phi={r['phi_deg']:.1f} "
            f"dz={r['dz_um']:.1f} off=({r['off_x_px']:+.2f},{r['off_y_px']:+.2f})",
        }

    keys = (
        "d_eef_fast_poppy",
        "d_eef_fast_galsim",
        "d_eef_poppy_galsim",
        "maxpix_fast_poppy",
        "maxpix_fast_galsim",
        "maxpix_poppy_galsim",
        "miss_fast_window_poppy",
        "d_eef_fast_gauss_poppy",
        "d_eef_fast_gauss_galsim",
        "d_eef_fast_gauss_fast",
        "maxpix_fast_gauss_poppy",
        "maxpix_fast_gauss_galsim",
    )
    s = {k: worst(k) for k in keys if any(k in r for r in rows)}
    s["all_pass"] = all(r["pass"] for r in rows)
    s["n_rows"] = len(rows)
    s["flux_fast_minus_poppy_max"] = max(abs(r["flux_fast"] - r["flux_poppy"]) for r in rows)
    return s


def markdown(result: dict) -> str:
    """Summary tables of a result (as written to ``--json``): agreement, speed, memory."""
    parts = []
    summ = result.get("agreement_summary")
    if summ:
        keys = [
            ("d_eef_fast_poppy", "EEF fast - poppy", "+.4f", "<= 0.01"),
            ("d_eef_fast_galsim", "EEF fast - galsim", "+.4f", "<= 0.01"),
            ("d_eef_poppy_galsim", "EEF poppy - galsim", "+.4f", ""),
            ("maxpix_fast_poppy", "worst pixel fast - poppy (of flux)", ".2%", "<= 1 %"),
            ("maxpix_fast_galsim", "worst pixel fast - galsim (of flux)", ".2%", "<= 1 %"),
            ("d_eef_fast_gauss_galsim", f"EEF fast, {GAUSS_N} Gauss nodes - galsim, 10 samples",
             "+.4f", "<= 0.01"),
            ("d_eef_fast_gauss_poppy", f"EEF fast, {GAUSS_N} Gauss nodes - poppy, 10 samples",
             "+.4f", "<= 0.01"),
            ("d_eef_fast_gauss_fast", f"EEF fast, {GAUSS_N} Gauss nodes - fast, 10 samples",
             "+.4f", ""),
            ("maxpix_fast_gauss_galsim", f"worst pixel fast, {GAUSS_N} Gauss nodes - galsim "
             "(of flux)", ".2%", "<= 1 %"),
        ]  # fmt: skip
        rows = [
            dict(q=lab, v=format(summ[k]["value"], f), c=crit, w=summ[k]["where"])
            for k, lab, f, crit in keys
            if k in summ
        ]
        cols = [
            ("q", "agreement (worst case)", ""),
            ("v", "value", ""),
            ("c", "criterion", ""),
            ("w", "where", ""),
        ]
        n = summ.get("n_rows")
        ok = "all pass" if summ.get("all_pass") else "NOT all pass"
        parts.append(f"Agreement over {n} cases ({ok}):\n\n" + markdown_table(rows, cols))
    tim = result.get("timing")
    if tim:
        names = {
            "galsim_chromatic": "GalSim ChromaticOpticalPSF",
            "galsim_sum": "sum of GalSim OpticalPSF",
            "poppy": "poppy",
            "fast_distinct": "fast, every stamp its own optical state",
            "fast_shared": "fast, one optical state for many offsets",
            "fast_distinct_gauss": "fast, every stamp its own state, band by Gauss nodes",
            "galsim_chromatic_gauss": "GalSim ChromaticOpticalPSF at the same Gauss nodes",
        }
        rows = [
            dict(engine=lab, **{k: tim[key][k] for k in ("stamps_per_s", "s_per_stamp")})
            for key, lab in names.items()
            if key in tim
        ]
        ratios = tim.get("ratios", {})
        kinds = {"fast_distinct": "distinct", "fast_shared": "shared",
                 "fast_distinct_gauss": "distinct_gauss"}  # fmt: skip
        for r, key in zip(rows, [k for k in names if k in tim], strict=True):
            if key in kinds:
                r["x_chromatic"] = ratios.get(f"{kinds[key]}_vs_galsim_chromatic")
            r["n_wl"] = tim[key].get("n_wavelengths", tim.get("n_wavelengths"))
        cols = [
            ("engine", "engine (32x32 stamps)", ""),
            ("n_wl", "wavelengths", "d"),
            ("stamps_per_s", "stamps/s", ".2f"),
            ("s_per_stamp", "s per stamp", ".4g"),
            ("x_chromatic", "x ChromaticOpticalPSF", ".0f"),
        ]
        tg = tim.get("targets", {})
        met = ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in tg.items())
        parts.append(markdown_table(rows, cols) + (f"\n\nTargets: {met}." if met else ""))
    mem = result.get("memory")
    if mem:
        rows = [dict(mode=k, **v) for k, v in mem.items() if isinstance(v, dict)]
        cols = [
            ("mode", "batch of fast stamps", ""),
            ("n_stamps", "stamps", "d"),
            ("peak_rss_mb", "peak RSS (MB)", ".0f"),
        ]
        parts.append(markdown_table(rows, cols))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print tables; optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer states and stamps (~2 min)")
    ap.add_argument("--json", default=None, help="write every row and figure to this file")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--offsets", type=int, default=16, help="offsets per state (fast, shared)")
    ap.add_argument(
        "--threads",
        default="auto",
        help="torch threads for the fast engine: a number, or 'auto' = the faster of 1 and 2 "
        "on a short probe (on a machine shared with other jobs, 2 OpenMP threads can be many "
        "times slower than 1)",
    )
    ap.add_argument("--fov-px", type=int, default=16, help="fast engine field (pixels)")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    t_start = time.perf_counter()
    result: dict = {"quick": args.quick, "seed": args.seed, "fast_fov_px": args.fov_px}
    if args.threads == "auto":
        probe = probe_threads()
        threads = min(probe, key=probe.get)
        result["thread_probe_s_per_state"] = {str(k): v for k, v in probe.items()}
        log(f"thread probe (s per distinct state): {probe} -> {threads} thread(s)")
    else:
        threads = int(args.threads)
    torch.set_num_threads(threads)
    result["machine"] = machine_info()
    log(f"machine: {machine_line(result['machine'])}")

    def save() -> None:
        if args.json:
            write_json(args.json, result)

    if not args.skip_agreement:
        log("\n== agreement: fast vs poppy vs galsim, 32x32 stamps ==")
        rows = run_agreement(args.quick, args.seed, log, args.fov_px)
        print()
        print_agreement(rows)
        result["agreement_rows"] = rows
        result["agreement_summary"] = summarise_agreement(rows)
        print("\nworst cases:")
        for k, v in result["agreement_summary"].items():
            print(f"  {k}: {v}")
        save()
    if not args.skip_timing:
        log("\n== speed: polychromatic (10 wavelengths) 32x32 stamps ==")
        tim = run_timing(args.quick, args.seed, args.offsets, log, args.fov_px)
        result["timing"] = tim
        print(f"\n{'engine':34s} {'stamps/s':>10s} {'s/stamp':>10s}")
        for key in ("galsim_chromatic", "galsim_sum", "poppy", "fast_distinct", "fast_shared",
                    "fast_distinct_gauss", "galsim_chromatic_gauss"):  # fmt: skip
            print(f"{key:34s} {tim[key]['stamps_per_s']:10.2f} {tim[key]['s_per_stamp']:10.5f}")
        print("ratios:")
        for k, v in tim["ratios"].items():
            print(f"  {k:32s} {v:10.1f}x")
        print(f"targets: {tim['targets']}")
        print(f"ChromaticOpticalPSF vs sum: {tim['galsim_chromatic']['accuracy_vs_sum']}")
        save()
    if not args.skip_memory:
        log("\n== peak memory, batch of 4,096 fast stamps (fresh process) ==")
        result["memory"] = run_memory(args.quick, threads, log)
    result["wall_s"] = time.perf_counter() - t_start
    # other jobs on the machine slow every engine: the load is part of the figures
    result["load_avg_1_5_15_end"] = list(os.getloadavg())
    log(f"\nwall time {result['wall_s']:.0f} s\n")
    print(markdown(result))
    save()
    if args.json:
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
