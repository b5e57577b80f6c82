"""The model section: identity, input and output, size, cost and the module table."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.architecture import LayerInfo

__all__ = ["TABLE_DEPTH", "ModelView", "model_view"]

TABLE_DEPTH = 2
"""Modules shown in the report's module table: dotted paths of at most this many parts."""


@dataclass(frozen=True)
class ModelView:
    """The model section.

    Attributes:
        target_layer: The CAM family's target layer, or why there is none.
        depth: :data:`TABLE_DEPTH`.
        n_layers: Modules in all (``layers.csv``).
        layers: The modules shown, in definition order.
    """

    name: str
    file_size: int
    file_format: str
    sha256: str
    input_shape: tuple[int, int, int]
    n_classes: int
    output_kind: str
    parameters: int
    trainable_parameters: int
    flops_per_image: int
    latency_ms: float
    throughput: float
    batch_size: int
    device: str
    peak_memory_bytes: int
    peak_memory_kind: str
    target_layer: str
    depth: int
    n_layers: int
    layers: tuple[LayerInfo, ...]


def model_view(inputs: AuditInputs) -> ModelView:
    """What the architecture profile says about the model, and its top modules."""
    profile = inputs.architecture
    return ModelView(
        name=inputs.config.model.name,
        file_size=profile.file_size,
        file_format=profile.file_format,
        sha256=profile.sha256,
        input_shape=profile.input_shape,
        n_classes=len(inputs.evaluation.class_counts),
        output_kind=inputs.evaluation.output_kind.value,
        parameters=profile.parameters,
        trainable_parameters=profile.trainable_parameters,
        flops_per_image=profile.flops_per_image,
        latency_ms=profile.latency_ms,
        throughput=profile.throughput,
        batch_size=profile.batch_size,
        device=profile.device,
        peak_memory_bytes=profile.peak_memory_bytes,
        peak_memory_kind=profile.peak_memory_kind,
        target_layer=inputs.explanations.layer or "none (no 4-D output with spatial extent)",
        depth=TABLE_DEPTH,
        n_layers=len(profile.layers),
        layers=tuple(layer for layer in profile.layers if layer.path.count(".") < TABLE_DEPTH),
    )
