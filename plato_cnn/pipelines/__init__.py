"""Offline pipelines: pretraining, fine-tuning, sigma calibration and head training.

They import the inference side (:mod:`plato_cnn.predict`, :mod:`plato_cnn.nn`); nothing on the
inference side imports them.
"""
