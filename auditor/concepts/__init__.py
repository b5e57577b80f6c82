"""What the network's units have learned: concepts inside the network (network dissection)."""

from auditor.concepts.dissection import Batch, Dissection, UnitThresholds, dissect, upsampled

__all__ = ["Batch", "Dissection", "UnitThresholds", "dissect", "upsampled"]
