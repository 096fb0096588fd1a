"""The two-tower retrieval model of freshtower, its features and export.

- `models.features`: the tf.Transform `preprocessing_fn` (id vocabularies,
  bucketed and multi-hot side features).
- `models.model`: the TFRS two-tower model, trained with in-batch softmax.
- `models.trainer`: the TFX Trainer's `run_fn`.
- `models.export`: the serving SavedModel and its signatures.

TensorFlow Recommenders needs Keras 2 (the `tf-keras` package), which
TensorFlow 2.16 only uses when TF_USE_LEGACY_KERAS is set before it is
first imported; importing this package sets it for the processes that
import it first.
"""

import contextlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# ScaNN's TensorFlow ops, when the package is installed: a model exported
# with a ScaNN index (`ModelConfig.retrieval="scann"`) loads only where
# they are registered, in the Evaluator as in a serving process.
with contextlib.suppress(ImportError):
    from scann.scann_ops.py import scann_ops as _scann_ops  # noqa: F401
