"""The TFX Trainer entry point: `run_fn` trains and exports the model.

The Trainer component (`components.warm_start_trainer.WarmStartTrainer`)
is pointed here with `run_fn="models.trainer.run_fn"`. Its custom config:

- `model`: the hyperparameters (`models.model.ModelConfig`);
- `max_recall_cutoff`: the largest K of the Evaluator's Recall@K;
- `delta`, `catalogue`: where InteractionDelta's outputs are (added by
  the component's executor);
- `full_retrain` (bool) and `full_retrain_every` (N: spans whose number is
  a multiple of N retrain from scratch).

A warm start copies the base model's weights (see `models.warm_start`)
and trains on the delta's added and modified pairs (those of held-out
splits excepted), the released ones (held out last time, not any more)
plus the replay sample;
the number of steps follows from that set, so a small delta costs little.
A cold start trains a fresh model on the whole snapshot; the log and the
training summary say why it was cold: no base model, a full retrain asked
for, a base model whose files are missing or whose architecture differs.
When the base model was trained on an older span than the delta starts
from, the warm-started model trains on the whole snapshot instead.

Training mirrors the model over every visible GPU
(`tf.distribute.MirroredStrategy`); with one GPU or none it runs under
TensorFlow's default strategy, so the same code trains on a laptop's CPU
and on a GPU node. The batch size is the global one: with N replicas each
scores its share of the batch against the in-batch negatives it holds.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models import features, warm_start
from models.export import export_retrieval_model, popularity_shift
from models.model import ModelConfig, TwoTowerModel, compile_model

__all__ = [
    "TRAINING_SUMMARY",
    "collect_catalogue",
    "distribution_strategy",
    "read_training_summary",
    "run_fn",
    "training_dataset",
]

TRAINING_SUMMARY = "training_summary.json"
_DELTA_TRAINING_SPLITS = ("added", "modified", "released", "replay")

_ITEM_COLUMNS = ("item_index", "item_genres", "item_year_bucket")


def training_dataset(
    fn_args: tfx.components.FnArgs,
    files: list[str],
    transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool,
    seed: int,
    held_out_flag: bool = False,
) -> tf.data.Dataset:
    """One pass over raw examples through the transform graph.

    Transform does not write transformed examples: the graph is applied
    here as the examples are read, which costs training little and saves
    the pipeline a pass over the snapshot.

    Args:
      fn_args: the Trainer's arguments (for its data accessor).
      files: raw tf.Example files.
      transform_output: the Transform component's output.
      batch_size: examples per batch.
      shuffle: whether to shuffle the files and examples.
      seed: the shuffle's seed.
      held_out_flag: the examples carry `features.HELD_OUT` (the delta's
        do); rows where it is set are dropped.

    Returns:
      Dicts of [batch, ...] transformed tensors.
    """
    schema = schema_pb2.Schema()
    schema.CopyFrom(transform_output.raw_metadata.schema)
    if held_out_flag:
        held_out = schema.feature.add(
            name=features.HELD_OUT, type=schema_pb2.INT
        )
        held_out.shape.dim.add(size=1)
        held_out.presence.min_fraction = 1.0
    raw = fn_args.data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size,
            shuffle=shuffle,
            shuffle_seed=seed,
            num_epochs=1,
        ),
        schema,
    )
    if held_out_flag:

        def training_rows(batch):
            batch = dict(batch)
            flag = tf.reshape(batch.pop(features.HELD_OUT), [-1])
            keep = tf.equal(flag, 0)
            return {k: tf.boolean_mask(v, keep) for k, v in batch.items()}

        raw = raw.map(training_rows)
    layer = transform_output.transform_features_layer()
    return raw.map(layer, num_parallel_calls=tf.data.AUTOTUNE)


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
    """Logs the mean loss of each epoch (Keras shows the last batch's).

    Also times the first step, which builds the training graph: a cost
    that each new model pays once, whatever the size of its training set.
    """

    def __init__(self):
        super().__init__()
        self.first_step_seconds = 0.0

    def on_train_begin(self, logs=None):
        self._train_start = time.monotonic()
        self.first_step_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._losses = []
        self._start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if not self.first_step_seconds:
            self.first_step_seconds = time.monotonic() - self._train_start
        self._losses.append(float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        logging.info(
            "Epoch %d: %d steps, mean batch loss %.4f, %.1f s",
            epoch + 1,
            len(self._losses),
            float(np.mean(self._losses)) if self._losses else float("nan"),
            time.monotonic() - self._start,
        )


def _split_by_time(
    dataset: tf.data.Dataset, share: float
) -> tuple[tf.data.Dataset, tf.data.Dataset, int]:
    """Holds out the newest `share` of a dataset's rows, by timestamp.

    Returns:
      The older rows, the newest rows and how many the newest are.
    """
    times = np.concatenate(
        [b["timestamp"] for b in dataset.as_numpy_iterator()]
    )
    cut = np.quantile(times, 1.0 - share, method="higher")
    newest = int(np.sum(times > cut))

    def rows(keep_newer: bool):
        def select(batch):
            newer = tf.reshape(batch["timestamp"], [-1]) > cut
            keep = newer if keep_newer else tf.logical_not(newer)
            return {k: tf.boolean_mask(v, keep) for k, v in batch.items()}

        return dataset.map(select)

    return rows(False), rows(True), newest


def _fit(
    model: TwoTowerModel,
    train: tf.data.Dataset,
    config: ModelConfig,
    epochs: int,
) -> tuple[int, float]:
    """Trains `model` for at most `epochs` passes.

    With `config.validation_share`, the newest rows of the training set are
    held out and training stops once their loss stops falling (or after
    `epochs`), keeping the weights of the best epoch: on a history
    replayed by time, a model trained for a fixed count of epochs either
    stops short or overfits the past. Without it, `epochs` passes.

    Returns:
      The epochs the weights come from, and the seconds of the first step
      (most of it building the training graph).
    """
    log = _EpochLog()
    older, newest, count = train, None, 0
    if config.validation_share:
        older, newest, count = _split_by_time(train, config.validation_share)
    if not count:
        model.fit(older, epochs=epochs, verbose=0, callbacks=[log])
        return epochs, log.first_step_seconds
    stop = tf.keras.callbacks.EarlyStopping(
        monitor="val_loss",
        patience=config.patience,
        restore_best_weights=True,
    )
    history = model.fit(
        older,
        validation_data=newest,
        epochs=epochs,
        verbose=0,
        callbacks=[log, stop],
    )
    losses = history.history["val_loss"]
    best = int(np.argmin(losses)) + 1
    logging.info(
        "Early stopping on the newest %d rows: validation loss %s; weights "
        "of epoch %d",
        count,
        ", ".join(f"{v:.4f}" for v in losses),
        best,
    )
    return best, log.first_step_seconds


def _count_records(patterns: list[str]) -> int:
    """Records in the files."""
    files = [f for p in patterns for f in tf.io.gfile.glob(p)]
    return sum(
        1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP")
    )


def _item_counts(
    train: tf.data.Dataset, num_items: int
) -> tuple[np.ndarray, int]:
    """Interactions per known item, and rows in all, in one pass."""
    counts = np.zeros(num_items, np.int64)
    rows = 0
    for batch in train.map(lambda b: b["item_index"]).as_numpy_iterator():
        index = batch.reshape(-1)
        rows += len(index)
        counts += np.bincount(index[index < num_items], minlength=num_items)
    return counts, rows


def _vocabulary_counts(
    transform_output: tft.TFTransformOutput, name: str
) -> dict[str, int]:
    """Snapshot counts of the ids of one vocabulary ("count id" lines)."""
    path = transform_output.vocabulary_file_by_name(
        name + features.COUNTS_SUFFIX
    )
    counts = {}
    with tf.io.gfile.GFile(path) as f:
        for line in f:
            count, _, token = line.rstrip("\n").partition(" ")
            counts[token] = int(count)
    return counts


def _base_state(
    fn_args: tfx.components.FnArgs, custom_config: dict[str, Any], span: int
) -> tuple[warm_start.BaseModelState | None, str]:
    """The base model to warm-start from, or None and why not."""
    every = int(custom_config.get("full_retrain_every") or 0)
    if custom_config.get("full_retrain"):
        return None, "a full retrain was asked for"
    if every and span % every == 0:
        return None, f"span {span} is a full-retrain span (every {every})"
    if not fn_args.base_model:
        # The Trainer's executor drops a damaged base model and says why.
        return None, custom_config.get("base_model_problem") or "no base model"
    try:
        return warm_start.read_state(fn_args.base_model), ""
    except warm_start.ColdStart as reason:
        return None, str(reason)


def _build(model: TwoTowerModel, batch: dict[str, tf.Tensor]) -> None:
    model.user_tower(batch)
    model.item_tower(batch)


def _active_catalogue(path: str | None) -> tuple[set[str] | None, dict]:
    """Ids and popularity of the catalogue InteractionDelta wrote."""
    if not path:
        return None, {}
    with tf.io.gfile.GFile(path) as f:
        frame = pd.read_csv(f, dtype={"item_id": str})
    popularity = dict(zip(frame["item_id"], frame["popularity"], strict=True))
    return set(popularity), popularity


def read_training_summary(serving_dir: str) -> dict[str, Any]:
    """The training summary `run_fn` wrote into an exported model."""
    path = os.path.join(serving_dir, "assets.extra", TRAINING_SUMMARY)
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def distribution_strategy(
    devices: list[str] | None = None,
) -> tf.distribute.Strategy:
    """Mirrors training over every visible GPU, or runs where TF places it.

    Args:
      devices: the devices to mirror over; by default the visible GPUs.
        With one device or none (a CPU machine), TensorFlow's default
        strategy: one GPU when there is one, the CPU otherwise.
    """
    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains (warm or cold) and exports the retrieval SavedModel."""
    custom_config = fn_args.custom_config or {}
    config = ModelConfig.from_dict(custom_config.get("model"))
    delta = custom_config.get("delta")
    span = int(delta["span"]) if delta else 0
    tf.keras.utils.set_random_seed(config.seed)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    vocabularies = {
        name: [
            token.decode()
            for token in transform_output.vocabulary_by_name(name)
        ]
        for name in (features.USER_VOCABULARY, features.ITEM_VOCABULARY)
    }
    num_users = len(vocabularies[features.USER_VOCABULARY])
    num_items = len(vocabularies[features.ITEM_VOCABULARY])

    def snapshot(files, shuffle):
        return training_dataset(
            fn_args,
            files,
            transform_output,
            config.batch_size,
            shuffle=shuffle,
            seed=config.seed,
        )

    strategy = distribution_strategy()
    logging.info(
        "Training with %s over %d replicas",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    first_batch = next(iter(snapshot(fn_args.train_files, False)))
    # The item features of every item of the snapshot: new items start
    # from similar known ones, and the served catalogue is built from them.
    catalogue = collect_catalogue(
        snapshot(fn_args.train_files + fn_args.eval_files, False), num_items
    )
    item_counts = _vocabulary_counts(transform_output, features.ITEM_VOCABULARY)
    base, reason = _base_state(fn_args, custom_config, span)
    carried = None
    # Variables made in the strategy's scope are mirrored on every device.
    with strategy.scope():
        model = TwoTowerModel(num_users, num_items, config)
        _build(model, first_batch)
        if base is not None:
            try:
                carried = warm_start.carry_over(
                    model, base, vocabularies, item_features=catalogue
                )
            except warm_start.ColdStart as cold:
                reason = str(cold)
                model = TwoTowerModel(num_users, num_items, config)
                _build(model, first_batch)
        model.set_item_frequencies(
            [
                item_counts.get(i, 0)
                for i in vocabularies[features.ITEM_VOCABULARY]
            ]
        )
        compile_model(model)
        # On a warm start the optimizer's accumulators follow the rows
        # they belong to (models.warm_start).
        optimizer_carried = (
            carried is not None
            and config.carry_optimizer
            and warm_start.carry_optimizer_state(model, base, vocabularies)
        )
    if carried is None:
        logging.info("Cold start: %s.", reason)
    else:
        logging.info(
            "Warm start from the span-%d model at %s: rows carried %s, new %s",
            base.span,
            fn_args.base_model,
            carried.carried,
            carried.new,
        )
        logging.info(
            "Optimizer state: %s",
            "carried over" if optimizer_carried else "fresh",
        )

    on_delta = (
        carried is not None
        and delta is not None
        and delta.get("previous_span") == base.span
    )
    if on_delta:
        files = []
        for split in _DELTA_TRAINING_SPLITS:
            files += tf.io.gfile.glob(os.path.join(delta["splits"][split], "*"))
        train = training_dataset(
            fn_args,
            files,
            transform_output,
            config.batch_size,
            shuffle=True,
            seed=config.seed,
            held_out_flag=True,
        )
        training_set = "delta (added, modified, released, replay)"
        # The in-batch candidates come from the delta, where new and
        # changed items are far more common than in the snapshot: the
        # sampling-bias correction uses their share of what is trained on
        # (measured in the package doc).
        item_shares, examples = _item_counts(train, num_items)
        model.set_item_frequencies(item_shares)
    else:
        if carried is not None:
            logging.info(
                "The base model was trained on span %d but the delta starts "
                "from span %s: training on the whole snapshot.",
                base.span,
                delta.get("previous_span") if delta else None,
            )
        files = list(fn_args.train_files)
        train = snapshot(files, True)
        training_set = "snapshot"
        examples = _count_records(files)
    max_epochs = config.warm_epochs if on_delta else config.epochs

    logging.info(
        "Training on the %s: %d examples, %d users, %d items, up to %d epochs",
        training_set,
        examples,
        num_users,
        num_items,
        max_epochs,
    )
    start = time.monotonic()
    epochs, first_step = 0, 0.0
    if examples:
        epochs, first_step = _fit(model, train, config, max_epochs)
    seconds = time.monotonic() - start

    active, popularity = _active_catalogue(custom_config.get("catalogue"))
    ids = [
        vocabularies[features.ITEM_VOCABULARY][i]
        for i in catalogue["item_index"]
    ]
    if active is not None:
        keep = np.array([i in active for i in ids], dtype=bool)
        catalogue = {k: v[keep] for k, v in catalogue.items()}
        ids = [i for i, k in zip(ids, keep, strict=True) if k]
    vectors = model.item_tower(
        {k: tf.constant(v) for k, v in catalogue.items()}
    ).numpy()
    if popularity and config.popularity_shift and config.item_bias:
        # The item bias is the vectors' last column, met by a constant 1
        # in every user vector: the shift stays within one dot product.
        # The reference is the snapshot's share, warm start or cold: the
        # carried rows were learnt on it, the delta only adjusts them.
        vectors[:, -1] += config.popularity_shift * popularity_shift(
            np.array([item_counts.get(i, 0) for i in ids]),
            np.array([popularity[i] for i in ids]),
        )
    export_retrieval_model(
        model,
        transform_output,
        ids,
        vectors,
        fn_args.serving_model_dir,
        config.top_k,
        max_cutoff=int(custom_config.get("max_recall_cutoff", config.top_k)),
        num_users=num_users,
        catalogue_popularity=(
            np.array([popularity[i] for i in ids]) if popularity else None
        ),
        cold_user_feature_weight=config.cold_user_feature_weight,
        retrieval=config.retrieval,
    )
    warm_start.write_state(
        fn_args.serving_model_dir,
        model,
        vocabularies,
        {
            name: _vocabulary_counts(transform_output, name)
            for name in vocabularies
        },
        span,
    )
    summary = {
        "span": span,
        "mode": "cold" if carried is None else "warm",
        "reason": reason,
        "base_span": None if carried is None else base.span,
        "optimizer": "carried over" if optimizer_carried else "fresh",
        "carried": carried.carried if carried else {},
        "new": carried.new if carried else {},
        "vocabulary": {k: len(v) for k, v in vocabularies.items()},
        "training_set": training_set,
        "examples": examples,
        "epochs": epochs,
        "steps": epochs * math.ceil(examples / config.batch_size),
        "seconds": round(seconds, 3),
        "first_step_seconds": round(first_step, 3),
        "catalogue": len(ids),
    }
    path = os.path.join(
        fn_args.serving_model_dir, "assets.extra", TRAINING_SUMMARY
    )
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(summary, f, indent=2)
    logging.info("Training summary: %s", warm_start.describe(summary))
    logging.info(
        "Exported the retrieval model with %d catalogue items to %s",
        len(ids),
        fn_args.serving_model_dir,
    )
