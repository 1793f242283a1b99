"""Ground truth of focus: the EEF definition, the expected EEF and the best focus.

* :mod:`~plato_sim.truth.eef`: ensquared energy in the best-placed pixel box;
* :mod:`~plato_sim.truth.bestfocus`: expected EEF over sub-pixel positions, per-field and
  camera best focus, and ``T_BF`` by the definition in ``docs/facts.md``.
"""
