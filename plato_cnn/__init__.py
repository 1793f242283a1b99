"""plato_cnn: best-focus temperature of PLATO cameras from ground-test and synthetic images."""

__version__ = "0.1.0"
