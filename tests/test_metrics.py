"""CatalogueRecall against a direct computation of Recall@K."""

import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_types

from models.metrics import CatalogueRecall, metric_name


def _recall(top_k, labels, scores, weights):
    (computation,) = CatalogueRecall(top_k).computations()
    combiner = computation.combiner
    accumulators = []
    for part in (slice(0, 3), slice(3, None)):
        accumulator = combiner.create_accumulator()
        for label, row, weight in zip(
            labels[part], scores[part], weights[part], strict=True
        ):
            accumulator = combiner.add_input(
                accumulator,
                metric_types.StandardMetricInputs(
                    label=np.array([label]),
                    prediction=row,
                    example_weight=np.array([weight]),
                ),
            )
        accumulators.append(accumulator)
    output = combiner.extract_output(combiner.merge_accumulators(accumulators))
    ((key, value),) = output.items()
    assert key.name == metric_name(top_k)
    return value


@pytest.mark.parametrize("top_k", [1, 2, 5])
def test_catalogue_recall_is_the_share_of_items_ranked_within_k(top_k):
    rng = np.random.default_rng(top_k)
    scores = rng.normal(size=(9, 6))
    labels = rng.integers(0, 6, 9)
    weights = np.ones(9)

    value = _recall(top_k, labels, scores, weights)

    ranks = [
        int(np.sum(row > row[label]))
        for row, label in zip(scores, labels, strict=True)
    ]
    assert value == pytest.approx(np.mean([r < top_k for r in ranks]))


def test_ties_count_for_the_item():
    scores = np.array([[1.0, 1.0, 0.0]] * 2 + [[0.0, 2.0, 3.0]] * 4)
    labels = np.array([1, 0, 0, 0, 2, 1])
    # The pipeline's examples carry no weights: every pair counts once.
    weights = np.array([1.0, 1.0, 2.0, 2.0, 1.0, 3.0])

    # Hits at K=1: the two tied rows and the label-2 row.
    assert _recall(1, labels, scores, weights) == pytest.approx(3 / 6)
    # At K=2 the last row (one item above it) joins.
    assert _recall(2, labels, scores, weights) == pytest.approx(4 / 6)
