"""Custom TFX components of freshtower."""

import os

# Keras 2 for TensorFlow Recommenders; see the `models` package docstring.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
