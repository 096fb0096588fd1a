"""The freshtower pipeline: its config, its definition and its runners."""

import os

# Keras 2 for TensorFlow Recommenders; see the `models` package docstring.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
