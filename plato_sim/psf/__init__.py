"""PSF engines: one interface (:class:`PSFEngine`), three implementations.

* ``fast``: batched PyTorch, exact pixel integration from the low-frequency OTF;
* ``poppy``: reference, pupil + ZernikeWFE + MFT, finely sampled and binned to pixels;
* ``galsim``: reference, sums of monochromatic ``OpticalPSF`` convolved with the pixel.
"""

from __future__ import annotations

from plato_sim.errors import ParameterError
from plato_sim.psf.base import DEFAULT_DIFFUSION_SIGMA_PX, PSFEngine
from plato_sim.psf.fast import FastEngine

__all__ = ["PSFEngine", "FastEngine", "get_engine", "ENGINES", "DEFAULT_DIFFUSION_SIGMA_PX"]

ENGINES = ("fast", "poppy", "galsim")


def get_engine(name: str, **kwargs) -> PSFEngine:
    """Engine by name (``fast``, ``poppy`` or ``galsim``); keyword arguments go to it."""
    if name == "fast":
        return FastEngine(**kwargs)
    if name in ("poppy", "galsim"):
        _require(name)
    if name == "poppy":
        from plato_sim.psf.poppy_engine import PoppyEngine

        return PoppyEngine(**kwargs)
    if name == "galsim":
        from plato_sim.psf.galsim_engine import GalSimEngine

        return GalSimEngine(**kwargs)
    raise ParameterError(f"unknown engine {name!r}; choose one of {ENGINES}")


def _require(module: str) -> None:
    """Refuse clearly when an optional reference engine's library is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ParameterError(
            f"the {module} engine needs the {module} package: "
            "pip install 'plato-focus[engines]' (or pip install " + module + ")"
        )
