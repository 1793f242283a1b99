"""plato_sim: a physical model of the ESA PLATO cameras for focus studies.

Data flow: camera + thermal model -> wavefront -> PSF engine -> detector -> scene -> storage.
"""

from .camera import PLATO_NORMAL_CAMERA, Camera
from .optics import CameraModel, OpticalModel
from .spectra import Spectrum, blackbody_spectrum, monochromatic, ogse_spectrum
from .thermal import ThermalModel
from .wavefront import CameraPerturbation, FieldAberrations

__version__ = "0.1.0"

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
