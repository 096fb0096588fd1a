"""PublishIndex: makes a run's pair index the previous one of later runs.

InteractionDelta writes the `PairIndex` of every snapshot it reads, and
the next run resolves the latest index to diff against. If that were the
delta's own output, a run killed after the delta (while the Trainer
runs, say) would leave its index behind: its rerun would resolve that
index instead of the one the killed run had, the delta's inputs would
differ, and the delta and everything after it would run again instead of
coming from the cache. So the index is published by this component, last
in the run: after the Pusher when the span trains, in place of training
when it does not. Until a run gets there, the latest published index is
the one it started from.

The published artifact holds an `index.json` like the PairIndex's, with
`index_uri` pointing to the PairIndex's shards (nothing is copied).
"""

# No `from __future__ import annotations`: TFX reads the component's
# artifact types from the live annotations.

import json
import os

import tensorflow as tf
from absl import logging
from tfx import v1 as tfx

from components.artifacts import PairIndex, PublishedPairIndex
from components.interaction_delta.executor import INDEX_FILE, read_index

__all__ = ["PublishIndex"]


@tfx.dsl.components.component
def PublishIndex(  # noqa: N802 - TFX names components like classes.
    index: tfx.dsl.components.InputArtifact[PairIndex],
    published_index: tfx.dsl.components.OutputArtifact[PublishedPairIndex],
) -> None:
    """Publishes `index` for the next runs (see the module doc)."""
    info = read_index(index.uri)
    info["index_uri"] = info.get("index_uri") or index.uri
    with tf.io.gfile.GFile(
        os.path.join(published_index.uri, INDEX_FILE), "w"
    ) as f:
        json.dump(info, f)
    for name in ("span", "pairs"):
        if index.has_custom_property(name):
            published_index.set_int_custom_property(
                name, index.get_int_custom_property(name)
            )
    logging.info(
        "Published the pair index of span %s (%s) for the next runs.",
        info.get("span"),
        index.uri,
    )
