"""What the report says about an explanation method as it ran."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.explain import ExplainContext, Method, PassCount

__all__ = ["MethodDescription", "describe"]


@dataclass(frozen=True)
class MethodDescription:
    """What the report says about a method that ran.

    Attributes:
        key, title, paper, implementation, reading, caveat: From the method's class.
        layer: ``"input"``, the target layer's path, or the head's pooled feature map.
        steps: Post-processing steps, in order (``min-max`` for display is not listed).
        settings: Its settings in words ("" if none).
        passes: Passes per image beyond the shared gradient passes.
    """

    key: str
    title: str
    paper: str
    implementation: str
    reading: str
    caveat: str
    layer: str
    steps: tuple[str, ...]
    settings: str
    passes: PassCount


def describe(method: Method, context: ExplainContext, size: tuple[int, int]) -> MethodDescription:
    """The report's description of ``method`` as it runs in ``context``."""
    if method.needs_head:
        layer = "feature map pooled by the head"
    elif method.uses_layer:
        layer = context.layer or "—"
    else:
        layer = "input"
    return MethodDescription(
        key=method.key,
        title=method.title,
        paper=method.paper,
        implementation=method.implementation,
        reading=method.reading,
        caveat=method.caveat,
        layer=layer,
        steps=tuple(method.postprocessing),
        settings=method.settings_text(),
        passes=method.passes_per_image(context, size),
    )
