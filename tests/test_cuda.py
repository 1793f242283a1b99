"""CUDA paths (issue 7): the fast engine, pretraining (bf16 autocast) and the CNN BFT on a GPU.

Skipped where torch sees no CUDA device (CI has none); run it on a CUDA machine beside
``benchmarks/gpu_check.sh`` (README, "Training on GPUs and clusters").  The CPU results are
the reference: a GPU may change the last bits (other FFT and convolution kernels, bf16
autocast in training) but not the answer.
"""

import time

import numpy as np
import pytest
import torch

from benchmarks.gpu_check import STAMP_PX, engine_requests, render
from plato_cnn.nn.card import load_model
from plato_cnn.nn.data import ArrayFocusDataset
from plato_cnn.nn.model import FocusNetConfig
from plato_cnn.pipelines.pretrain import TrainConfig, pretrain
from plato_cnn.predict import cnn_bft, predict_frames
from plato_cnn.reader import read_campaign
from plato_sim.psf import FastEngine
from plato_sim.scenes.ground_test import emulate_campaign

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _engine_stamps(device: str, n_states: int = 6, n_offsets: int = 3, seed: int = 3):
    """Stamps ``(B, K, S, S)`` (numpy float64) of random optical states, as the GPU check
    renders them, with their field positions and focal offsets."""
    z, sp, offsets, theta, phi, dz_um = engine_requests(n_states, n_offsets, seed)
    stamps = render(FastEngine(device=device), z, sp, offsets)
    return stamps.double().cpu().numpy(), theta, phi, dz_um


def test_fast_engine_cuda_matches_cpu():
    cpu, *_ = _engine_stamps("cpu")
    gpu, *_ = _engine_stamps("cuda")
    flux = cpu.sum(axis=(-1, -2), keepdims=True)
    assert np.all(flux > 0.5)  # most of the light inside the 32x32 stamp
    # float32 FFTs of another library: differences at the 1e-6 level of the flux
    assert np.abs(gpu - cpu).max() / flux.min() < 1e-4


def test_pretrain_on_cuda_resumes_and_loads_on_cpu(tmp_path, monkeypatch):
    import plato_cnn.pipelines.pretrain as tr

    stamps, theta, phi, dz = _engine_stamps("cuda", n_states=16, n_offsets=8)
    k = stamps.shape[1]
    data = ArrayFocusDataset(
        stamps.reshape(-1, STAMP_PX, STAMP_PX) * 1e5,
        np.repeat(theta, k),
        np.repeat(phi, k),
        np.repeat(dz, k),
        np.repeat(np.arange(16) % 4, k),
    )
    mcfg = FocusNetConfig(crop=16, channels=(8, 16), blocks_per_stage=1, hidden=16)
    cfg = TrainConfig(epochs=2, batch_size=16, max_steps_per_epoch=3, max_val_samples=32)
    real, calls = tr.evaluate, {"n": 0}

    def crash_in_epoch_2(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash in epoch 2")
        return real(*a, **kw)

    monkeypatch.setattr(tr, "evaluate", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        pretrain(data, tmp_path / "m", cfg, mcfg, device="cuda", progress=False)
    monkeypatch.setattr(tr, "evaluate", real)
    assert torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=False)["state"]["epoch"] == 1
    summary = pretrain(data, tmp_path / "m", cfg, mcfg, device="cuda", progress=False)
    assert summary["epochs"] == 2 and np.isfinite(summary["best_val_loss"])
    model, _ = load_model(tmp_path / "m", "cpu")
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    gpu_model, _ = load_model(tmp_path / "m", "cuda")
    x = data.stamps[:8]
    p_cpu = model.predict(x, data.theta_deg[:8], data.phi_deg[:8], device="cpu")
    p_gpu = gpu_model.predict(x, data.theta_deg[:8], data.phi_deg[:8], device="cuda")
    np.testing.assert_allclose(p_gpu["mu_um"], p_cpu["mu_um"], atol=1e-2)


def test_cnn_bft_on_cuda_matches_cpu(tmp_path):
    # an emulated camera (the shipped model is trained on such stamps), 6 fields x 3 dithers
    emulate_campaign(tmp_path / "camp", n_fields=6, n_dithers=3, frames_per_dither=1,
                     window_px=32, seed=5)  # fmt: skip
    frames = read_campaign(tmp_path / "camp")
    mu_cpu = predict_frames(frames, device="cpu")["mu_um"]
    mu_gpu = predict_frames(frames, device="cuda")["mu_um"]
    fit_cpu, _ = cnn_bft(frames, n_boot=20, device="cpu")
    fit_gpu, _ = cnn_bft(frames, n_boot=20, device="cuda")
    d_mu, d_t = np.abs(mu_gpu - mu_cpu).max(), abs(fit_gpu.bft_degC - fit_cpu.bft_degC)
    print(f"CUDA - CPU: max |d mu| {d_mu:.2e} um, |d T_BF| {d_t:.2e} degC")
    assert -90.0 < fit_cpu.bft_degC < -70.0  # a well-posed fit, not an extrapolation
    assert d_mu < 0.5  # um; TF32 convolutions may round at 1e-3 relative
    assert d_t < 0.02
    assert abs(fit_gpu.sigma_degC - fit_cpu.sigma_degC) < 0.02


def test_forward_bft_on_cuda_matches_cpu(tmp_path):
    # the physics forward fit (engine, Jacobian, Levenberg-Marquardt) on the GPU: a small
    # emulated camera, 3-wavelength spectrum and 12-px period as in tests/test_forward.py
    from plato_cnn.forward import forward_bft

    emulate_campaign(tmp_path / "camp", n_fields=6, n_dithers=3, frames_per_dither=1,
                     window_px=32, seed=7)  # fmt: skip
    frames = read_campaign(tmp_path / "camp")
    kw = dict(
        n_wavelengths=3, n_wavelengths_jacobian=3, n_sub=4, max_iter=10, fov_px=12, stamp_px=9
    )
    walls = []
    for device in ("cpu", "cuda"):
        t0 = time.perf_counter()
        walls.append((forward_bft(frames, device=device, **kw), time.perf_counter() - t0))
    (cpu, wall_cpu), (gpu, wall_gpu) = walls
    d_t = abs(gpu["bft_degC"] - cpu["bft_degC"])
    d_chi = abs(gpu["chi2"]["reduced"] / cpu["chi2"]["reduced"] - 1.0)
    print(f"forward CUDA - CPU: |d T_BF| {d_t:.2e} degC, chi2_red {d_chi:.1e} relative; "
          f"wall {wall_gpu:.1f} s vs {wall_cpu:.1f} s")  # fmt: skip
    assert -92.0 < cpu["bft_degC"] < -68.0
    assert d_t < 0.25 * cpu["sigma_degC"]  # the same answer, well inside its uncertainty
    assert d_chi < 0.01
    assert gpu["outside_model"] == cpu["outside_model"]
