"""How a model's output is read: class logits or probabilities, a binary score, or one
score per label of a multi-label model (see :func:`auditor.load.detect_output_kind`)."""

from __future__ import annotations

import enum

__all__ = ["OutputKind"]


class OutputKind(enum.Enum):
    """How the model's output is turned into class probabilities."""

    LOGITS = "multi-class logits (softmax applied)"
    BINARY_LOGIT = "a single binary logit (sigmoid applied)"
    BINARY_PROBABILITY = "a single probability of the second class (used as it is)"
    PROBABILITIES = "probabilities (rows sum to 1; used as they are)"
    LABEL_LOGITS = "one logit per label (a sigmoid applied to each)"
    LABEL_PROBABILITIES = "one probability per label (used as they are)"

    @property
    def multi_label(self) -> bool:
        """Whether each output is a label of its own (an image may have several)."""
        return self in (OutputKind.LABEL_LOGITS, OutputKind.LABEL_PROBABILITIES)

    @property
    def probabilities(self) -> bool:
        """Whether the model outputs probabilities (no logit to explain)."""
        return self in (
            OutputKind.BINARY_PROBABILITY, OutputKind.PROBABILITIES, OutputKind.LABEL_PROBABILITIES
        )  # fmt: skip
