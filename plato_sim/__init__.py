"""plato_sim: a physical model of the ESA PLATO cameras for focus studies.

Data flow: camera + thermal model -> wavefront -> PSF engine -> detector -> scene -> storage.
"""

from plato_sim._version import __version__
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, Camera
from plato_sim.optics.model import CameraModel, OpticalModel
from plato_sim.optics.spectra import Spectrum, blackbody_spectrum, monochromatic, ogse_spectrum
from plato_sim.optics.thermal import ThermalModel
from plato_sim.optics.wavefront import CameraPerturbation, FieldAberrations

__all__ = [
    "Camera",
    "PLATO_NORMAL_CAMERA",
    "CameraModel",
    "OpticalModel",
    "Spectrum",
    "ogse_spectrum",
    "blackbody_spectrum",
    "monochromatic",
    "ThermalModel",
    "CameraPerturbation",
    "FieldAberrations",
    "__version__",
]
