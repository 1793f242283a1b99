"""plato_cnn: best-focus temperature of PLATO cameras from ground-test and synthetic images."""

from plato_sim._version import __version__

__all__ = ["__version__"]
