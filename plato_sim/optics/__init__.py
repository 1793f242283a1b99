"""The optical model of a PLATO camera: what it is, before any photon is drawn.

* :mod:`~plato_sim.optics.camera`: constants with their sources; field angle, focal plane and
  CCD pixel geometry; pixel axes and the sub-pixel origin;
* :mod:`~plato_sim.optics.thermal`: TRP1 temperature -> thermal focal shift;
* :mod:`~plato_sim.optics.wavefront`: Noll Zernikes (normalisation, sign of defocus), the
  design's field-dependent aberrations and per-camera perturbations;
* :mod:`~plato_sim.optics.spectra`: source spectrum x transmission x QE -> wavelength samples;
* :mod:`~plato_sim.optics.model`: composes them into per-star, per-wavelength wavefronts.
"""
