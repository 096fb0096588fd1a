"""The Evaluator end to end: fresh held-out data, cohorts, baseline (slow)."""

import glob
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import models.export
from components.interaction_delta import executor
from pipeline import snapshots, synthetic
from pipeline.config import PipelineConfig
from pipeline.evaluation import ALL, BASELINE, CANDIDATE
from pipeline.local import run_span
from pipeline.pipeline import RECALL_CUTOFFS

pytestmark = pytest.mark.slow

# More items than the largest K, so that Recall@100 can tell models apart.
_HISTORY = synthetic.SyntheticConfig(
    seed=5,
    num_spans=2,
    initial_users=200,
    initial_items=300,
    new_items_per_span=40,
    interactions_per_user=10.0,
    popularity_sigma=1.0,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.write_history(root, _HISTORY)
    return root


@pytest.fixture(scope="module")
def first_span(data, tmp_path_factory):
    """Span 1, run once for the tests that go on from it."""
    workdir = tmp_path_factory.mktemp("first")
    return workdir, run_span(PipelineConfig.local(workdir, data, span=1))


def _split(config: PipelineConfig, split: str) -> pd.DataFrame:
    """The rows of one split of the newest ExampleGen run of a workdir."""
    runs = glob.glob(
        os.path.join(
            config.pipeline_root, "TemporalExampleGen", "examples", "*"
        )
    )
    newest = max(runs, key=lambda path: int(os.path.basename(path)))
    files = sorted(glob.glob(os.path.join(newest, f"Split-{split}", "*")))
    records = list(
        tf.data.TFRecordDataset(
            files, compression_type="GZIP"
        ).as_numpy_iterator()
    )
    return executor.decode_examples(records, newest, 0)


def _holdout(config: PipelineConfig, data) -> pd.DataFrame:
    """The held-out rows, with cohorts computed from the snapshots."""
    rows = _split(config, "eval")
    span = config.span
    if span > 1:
        before = snapshots.read_span(data, span - 1)
        users, items = set(before["user_id"]), set(before["item_id"])
    else:
        users, items = set(), set()
    rows["user_cohort"] = np.where(
        rows["user_id"].isin(users), "returning", "new"
    )
    rows["item_cohort"] = np.where(rows["item_id"].isin(items), "known", "new")
    return rows


def _recall(model_dir: str, rows: pd.DataFrame) -> dict[int, float]:
    """Recall@K from the serving signature's top-K lists."""
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    lists = serve(
        user_id=tf.constant(rows["user_id"].tolist()),
        user_age=tf.constant(rows["user_age"].tolist(), tf.int64),
        user_occupation=tf.constant(rows["user_occupation"].tolist()),
    )["item_ids"].numpy()
    items = rows["item_id"].to_numpy().astype(bytes)
    return {
        k: float(
            np.mean([i in top[:k] for i, top in zip(items, lists, strict=True)])
        )
        for k in RECALL_CUTOFFS
    }


def test_the_first_run_is_judged_on_the_floor_alone(data, first_span):
    workdir, report = first_span

    evaluation = report.evaluation
    assert report.blessed and evaluation.blessed
    assert not evaluation.has_baseline
    assert report.pushed_model is not None
    # The newest rows are held out, and every user and item is new.
    config = PipelineConfig.local(workdir, data, span=1)
    holdout = _holdout(config, data)
    train = _split(config, "train")
    assert holdout["timestamp"].min() > train["timestamp"].max()
    share = len(holdout) / (len(holdout) + len(train))
    assert share == pytest.approx(config.holdout_fraction, abs=0.01)
    assert evaluation.pairs[ALL] == len(holdout)
    assert evaluation.pairs["user_cohort=new"] == len(holdout)
    assert evaluation.recall[ALL][CANDIDATE] == pytest.approx(
        _recall(report.pushed_model, holdout), abs=1e-9
    )


def test_a_warm_candidate_is_compared_per_cohort_then_pushed(
    data, first_span, tmp_path
):
    workdir, first = first_span
    config = PipelineConfig.local(workdir, data, span=2)

    second = run_span(config)

    assert second.training["mode"] == "warm"
    evaluation = second.evaluation
    assert evaluation.has_baseline
    assert second.blessed, evaluation.failures
    assert second.pushed_model not in (None, first.pushed_model)
    # Every slice, for both models, is what the served lists give on the
    # same held-out rows.
    holdout = _holdout(config, data)
    slices = {ALL: holdout}
    for cohort in ("user_cohort", "item_cohort"):
        for value, rows in holdout.groupby(cohort):
            slices[f"{cohort}={value}"] = rows
    assert set(evaluation.recall) == set(slices)
    for name, rows in slices.items():
        assert evaluation.pairs[name] == len(rows), name
        for model, model_dir in (
            (CANDIDATE, second.pushed_model),
            (BASELINE, first.pushed_model),
        ):
            assert evaluation.recall[name][model] == pytest.approx(
                _recall(model_dir, rows), abs=1e-9
            ), (name, model)
    # The baseline never saw the new items: it cannot retrieve them.
    assert evaluation.recall["item_cohort=new"][BASELINE][100] == 0.0


def _upside_down(export):
    """Exports with every item vector negated: each list is ranked upside
    down, the items the model finds least likely first."""

    def export_upside_down(model, transform_output, ids, vectors, *a, **kw):
        return export(model, transform_output, ids, -vectors, *a, **kw)

    return export_upside_down


def test_a_bad_candidate_is_not_blessed_nor_pushed(data, tmp_path, monkeypatch):
    # A fresh workdir with span 1 pushed, so the good candidate of the
    # other test does not become this one's baseline.
    config = PipelineConfig.local(tmp_path, data, span=1)
    served = run_span(config).pushed_model
    # The Trainer reloads `models.trainer`, which then imports the
    # exporter anew from `models.export`: patched there, it sticks.
    monkeypatch.setattr(
        models.export,
        "export_retrieval_model",
        _upside_down(models.export.export_retrieval_model),
    )

    bad = run_span(PipelineConfig.local(tmp_path, data, span=2))

    assert bad.trained and not bad.blessed
    assert bad.pushed_model is None
    failures = "\n".join(bad.evaluation.failures)
    assert "user_cohort=returning: recall@100 change" in failures
    assert os.listdir(config.serving_root) == [os.path.basename(served)]
    # What is served is still the span-1 model, and it still answers.
    user = snapshots.read_span(data, 2).iloc[0]
    answer = tf.saved_model.load(served).signatures["serving_default"](
        user_id=tf.constant([user["user_id"]]),
        user_age=tf.constant([int(user["user_age"])], tf.int64),
        user_occupation=tf.constant([user["user_occupation"]]),
    )
    assert answer["item_ids"].shape == (1, 100)
