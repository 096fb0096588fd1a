"""Hands artifacts that a standard executor knows nothing about to user code.

TFX's Transform and Trainer executors pass their `custom_config` to the
user's `preprocessing_fn` and `run_fn`. The components here add input
channels to those two; their executors write what user code needs to know
about the extra artifacts (paths, spans) into the config and then run the
standard executor unchanged.
"""

from __future__ import annotations

from typing import Any

from tfx.types import standard_component_specs
from tfx.utils import json_utils

__all__ = ["with_custom_config"]


def with_custom_config(
    exec_properties: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """A copy of `exec_properties` whose custom config also holds `extra`."""
    key = standard_component_specs.CUSTOM_CONFIG_KEY
    config = json_utils.loads(exec_properties.get(key) or "null") or {}
    config.update(extra)
    return {**exec_properties, key: json_utils.dumps(config)}
