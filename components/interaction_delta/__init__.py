"""InteractionDelta: the component, its executor and the diff it computes."""

from components.interaction_delta.component import (
    InteractionDelta,
    InteractionDeltaSpec,
)

__all__ = ["InteractionDelta", "InteractionDeltaSpec"]
