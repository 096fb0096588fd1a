"""The TFX Trainer entry point: `run_fn` trains and exports the model.

The Trainer component is pointed here with
`run_fn="models.trainer.run_fn"`; the model hyperparameters travel in the
component's `custom_config` under the key `"model"` (see
`models.model.ModelConfig`), and the largest Recall@K cutoff the Evaluator
computes under `"max_recall_cutoff"`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models import features
from models.export import export_retrieval_model
from models.model import ModelConfig, TwoTowerModel

__all__ = ["collect_catalogue", "run_fn", "training_dataset"]

_ITEM_COLUMNS = ("item_index", "item_genres", "item_year_bucket")


def training_dataset(
    fn_args: tfx.components.FnArgs,
    files: list[str],
    transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """One pass over transformed examples, as dicts of [batch, ...] tensors."""
    return fn_args.data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size,
            shuffle=shuffle,
            shuffle_seed=seed,
            num_epochs=1,
        ),
        transform_output.transformed_metadata.schema,
    )


def collect_catalogue(
    batches: Iterable[dict[str, tf.Tensor]], num_items: int
) -> dict[str, np.ndarray]:
    """The item features of every distinct known item seen in `batches`.

    Args:
      batches: transformed examples.
      num_items: size of the item vocabulary; rows whose `item_index` is the
        out-of-vocabulary bucket (`num_items` or above) have no id to
        recommend and are left out.

    Returns:
      Item columns keyed by name, one row per distinct `item_index`, sorted
      by index; for an item seen more than once the last row wins.
    """
    columns: dict[str, list[np.ndarray]] = {k: [] for k in _ITEM_COLUMNS}
    for batch in batches:
        for key in _ITEM_COLUMNS:
            columns[key].append(batch[key].numpy())
    if not columns["item_index"]:
        raise ValueError("No examples to build the item catalogue from.")
    merged = {k: np.concatenate(v) for k, v in columns.items()}
    # np.unique keeps the first occurrence; reversing keeps the last.
    reversed_index = merged["item_index"][::-1]
    _, first = np.unique(reversed_index, return_index=True)
    rows = len(reversed_index) - 1 - first
    rows = rows[merged["item_index"][rows] < num_items]
    return {k: v[rows] for k, v in merged.items()}


class _EpochLog(tf.keras.callbacks.Callback):
    """Logs the mean loss of each epoch (Keras shows the last batch's)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._losses = []
        self._start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self._losses.append(float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        logging.info(
            "Epoch %d: %d steps, mean batch loss %.4f, %.1f s",
            epoch + 1,
            len(self._losses),
            float(np.mean(self._losses)) if self._losses else float("nan"),
            time.monotonic() - self._start,
        )


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains the two-tower model and exports the retrieval SavedModel."""
    custom_config = fn_args.custom_config or {}
    config = ModelConfig.from_dict(custom_config.get("model"))
    tf.keras.utils.set_random_seed(config.seed)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    item_vocabulary = transform_output.vocabulary_by_name(
        features.ITEM_VOCABULARY
    )
    num_users = transform_output.vocabulary_size_by_name(
        features.USER_VOCABULARY
    )
    num_items = len(item_vocabulary)

    model = TwoTowerModel(num_users, num_items, config)
    # XLA compilation of the optimizer costs seconds per new model and buys
    # nothing for embedding lookups on CPU.
    model.compile(
        optimizer=tf.keras.optimizers.Adagrad(
            config.learning_rate, jit_compile=False
        )
    )
    train = training_dataset(
        fn_args,
        fn_args.train_files,
        transform_output,
        config.batch_size,
        shuffle=True,
        seed=config.seed,
    )
    logging.info(
        "Training on %s: %d users, %d items, %d epochs",
        fn_args.train_files,
        num_users,
        num_items,
        config.epochs,
    )
    start = time.monotonic()
    model.fit(train, epochs=config.epochs, verbose=0, callbacks=[_EpochLog()])
    logging.info("Training took %.1f s", time.monotonic() - start)

    catalogue = collect_catalogue(
        training_dataset(
            fn_args,
            fn_args.train_files + fn_args.eval_files,
            transform_output,
            config.batch_size,
            shuffle=False,
            seed=config.seed,
        ),
        num_items,
    )
    vectors = model.item_tower(
        {k: tf.constant(v) for k, v in catalogue.items()}
    ).numpy()
    ids = [item_vocabulary[i].decode() for i in catalogue["item_index"]]
    export_retrieval_model(
        model,
        transform_output,
        ids,
        vectors,
        fn_args.serving_model_dir,
        config.top_k,
        max_cutoff=int(custom_config.get("max_recall_cutoff", config.top_k)),
    )
    logging.info(
        "Exported the retrieval model with %d catalogue items to %s",
        len(ids),
        fn_args.serving_model_dir,
    )
