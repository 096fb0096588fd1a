"""Artifact types that freshtower's components add to the standard ones.

Each is a folder; what it holds is written down here so that a reader of
the metadata store knows what to expect under an artifact's URI. The type
names carry a namespace, as Kubeflow Pipelines v2 requires of custom
artifact types.
"""

from tfx.types import artifact

__all__ = [
    "DeltaSummary",
    "ItemCatalogue",
    "PairIndex",
    "PublishedPairIndex",
    "span_of",
]


def span_of(examples: artifact.Artifact) -> int:
    """The span of an Examples artifact.

    ExampleGen records the span as a custom property; artifacts written by
    other tools may carry it as the type's `span` property instead.
    """
    if examples.has_custom_property("span"):
        return int(examples.get_int_custom_property("span"))
    return int(examples.span)


class PairIndex(artifact.Artifact):
    """Every (user_id, item_id) pair of one snapshot, sharded by user.

    Holds `index.json` (span, shard count, the previous index's URI) and
    `shard-SSSSS-of-NNNNN.parquet` files with the snapshot's columns, one
    row per pair. The next `InteractionDelta` run diffs against it.
    """

    TYPE_NAME = "freshtower.PairIndex"


class PublishedPairIndex(artifact.Artifact):
    """The `PairIndex` of a run that got to its end, for the next runs.

    Holds an `index.json` like the PairIndex's, plus `index_uri`: the
    PairIndex folder that holds the shards. A run publishes its index last
    (`components.index_publisher`), so a run that failed or was killed
    publishes none: its rerun resolves the same previous index as it did,
    and the components that finished are reused from the cache.
    """

    TYPE_NAME = "freshtower.PublishedPairIndex"


class DeltaSummary(artifact.Artifact):
    """Counts of what changed between two snapshots, in `summary.json`.

    The headline counts are also custom properties of the artifact, so that
    a pipeline condition can read them without opening the file.
    """

    TYPE_NAME = "freshtower.DeltaSummary"


class ItemCatalogue(artifact.Artifact):
    """The items of the newest snapshot, in `catalogue.csv`.

    Columns: item_id, pairs (interactions in the snapshot), last_timestamp,
    and popularity (recency-weighted interactions, newest weigh most).
    Items missing from the newest snapshot are retired and not listed.
    """

    TYPE_NAME = "freshtower.ItemCatalogue"
