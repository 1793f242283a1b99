"""The networks and what they need at inference: FocusNet, its datasets, the model card and
the plateau head.  Training lives in :mod:`plato_cnn.pipelines`."""
