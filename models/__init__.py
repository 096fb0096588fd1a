"""The two-tower retrieval model of freshtower, its features and export.

- `models.features`: the tf.Transform `preprocessing_fn` (id vocabularies,
  bucketed and multi-hot side features).
- `models.model`: the TFRS two-tower model, trained with in-batch softmax.
- `models.trainer`: the TFX Trainer's `run_fn`.
- `models.export`: the serving SavedModel and its signatures.

What the model does, and why (measured)
---------------------------------------

Replayed by time, most of a span's interactions come from users the model
has never seen, and a two-tower model trained with plain in-batch softmax
ranked below a list of the newest popular items, even for the users it
knew. The model keeps these choices. The figures are the mean Recall@100
over 5 spans: the model of span t, retrained from scratch, is scored on
the pairs span t + 1 adds, and each user's seen items are left out. "ML"
is MovieLens 100K (half the history, then 5 spans). "syn" is the
synthetic history (seed 0); until the optimizer item below, its span 1
was one simulated week, since then half the history, so its figures
compare only within an item. Each pair of figures is all pairs, then
returning users.

- Sampling-bias (logQ) correction (`ModelConfig.logq_correction`). In
  in-batch softmax, popular items appear as negatives in proportion to
  their popularity, so the model learns to rank them down. The
  correction subtracts each candidate's log share of the training
  interactions from its logit. Returning users, ML: 0.172 -> 0.289; all
  pairs: 0.278 -> 0.302.
- A learned item bias (`item_bias`): the last column of the item's id
  row, so the bias is carried over by id in a warm start like the rest
  of the row. With logQ: ML 0.302 -> 0.303. Both together, syn: 0.512 ->
  0.623 (popularity: 0.524).
- A new item's first row is the mean of its 10 most similar known items
  (genre cosine, release-year bucket to break ties; see
  `models.warm_start`), bias included. Before, it started from its
  out-of-vocabulary row, which is trained on rare items: with logQ and
  bias, new items were then all but never retrieved (ML new-item
  Recall@100 0.007).
- Unknown users get the catalogue's recency-weighted popularity,
  reordered by their features at half weight (`models.export`). A user
  id dropout (`user_id_dropout`: 10% of rows trained as unknown users)
  trains the out-of-vocabulary rows instead. It changed nothing (ML
  0.303 -> 0.302), so it is off.
- Early stopping on the newest 5% of the training rows
  (`validation_share`): their in-batch loss is a poor guide to recall,
  and the rows it holds back are the newest ones. Syn 0.623 -> 0.610, so
  it is off: 2 epochs.
- Tried and not kept: a recency-weighted popularity prior added to known
  users' scores (ML returning 0.292 -> 0.316, syn 0.623 -> 0.607), and
  recency-weighted training rows (half-life 14 days: ML 0.303 -> 0.301).

Measured through the whole pipeline (`python -m pipeline backtest`, the
4 spans after the cold first one; all / returning / new items):

- A prior shift at export (`popularity_shift`, `models.export`). With
  logQ the score estimates how likely an item is over the whole training
  history; what users pick next follows what is popular now. Each
  item's bias gains the log ratio of its recent share (recency-weighted,
  smoothed) to its training share. Warm, ML: 0.294 / 0.286 / 0.011 ->
  0.290 / 0.293 / 0.145; full, ML: 0.297 / 0.287 / 0.020 -> 0.299 / 0.303
  / 0.378; warm, syn: 0.610 / 0.605 / 0.791 -> 0.609 / 0.604 / 0.913.
  Unlike the prior above, it moves each item by how its popularity
  changed, not by how popular it is.
- On a warm start, the logQ correction uses each item's share of the
  delta and replay sample, the batches it is drawn from, instead of its
  share of the snapshot, which undercounts the new and changed items
  that fill a delta. Warm, ML: 0.290 / 0.293 / 0.145 -> 0.294 / 0.286 /
  0.483; syn: 0.609 / 0.604 / 0.913 -> 0.608 / 0.603 / 0.937.
- Two passes over a warm start's training set (`warm_epochs`), as over a
  cold start's: one pass costs syn 0.010 (0.618 -> 0.608) and ML nothing
  (0.293 -> 0.294).
- Adagrad's accumulators carried over on a warm start, row by row with
  the weights (`carry_optimizer`). With fresh ones, every carried row
  takes its first, largest steps again on a small delta. Warm, syn:
  0.536 / 0.531 / 0.976 -> 0.553 / 0.550 / 0.972; ML: 0.293 / 0.276 /
  0.470 -> 0.296 / 0.286 / 0.474. Full retrains, syn: 0.565 / 0.562 /
  0.914. Twice the replay sample (`--replay-ratio 2`) closes the rest of
  that gap (syn 0.566 / 0.564 / 0.956) for 1.5 times the examples; the
  default stays 1.

The resulting policies, warm / full / popularity (span 1 of the synthetic
history holding half of it; `bench/replay_bench.py`):

- syn: 0.554 / 0.550 / 0.974, 0.565 / 0.562 / 0.914, 0.424 / 0.411 /
  0.980;
- ML: 0.295 / 0.285 / 0.482, 0.299 / 0.304 / 0.376, 0.299 / 0.309 /
  0.327. About 84% of its next-span pairs come from unknown users, and
  for them popularity is all there is to go on.

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
