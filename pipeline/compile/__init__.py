"""Compile model definitions with TVM for target presets (``targets/*.yaml``)."""
