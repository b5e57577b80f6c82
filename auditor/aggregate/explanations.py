"""The explanation-methods section: what ran, at what cost, and how to read each method."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.figures import colorbar_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.explain import METHODS
from auditor.explain.engine import Explanations, MethodDescription

__all__ = ["ExplanationsView", "MethodView", "explanations_view", "method_views"]


@dataclass(frozen=True)
class MethodView:
    """One row of the methods table.

    Attributes:
        cost: Passes per image in words, e.g. ``"shared passes"`` or ``"256 forward"``.
        seconds_per_map: Mean seconds per map on this run's device, beyond the shared
            gradient passes; ``None`` for a method on the shared passes (their time is
            :attr:`ExplanationsView.shared_seconds`), NaN when no map was made.
    """

    key: str
    title: str
    paper: str
    implementation: str
    layer: str
    steps: str
    settings: str
    reading: str
    caveat: str
    cost: str
    seconds_per_map: float | None


@dataclass(frozen=True)
class ExplanationsView:
    """The explanation-methods section.

    Attributes:
        colorbar: The heat maps' shared colour scale (PNG data URI).
        methods: The methods that ran, in report order.
        shared_seconds: Seconds per explained image of the shared gradient passes.
        device_name: Where they ran.
        forward_batch: Images per forward pass of the perturbation methods.
        backward_batch: Images per forward+backward pass of the perturbation methods.
        measured: Whether those sizes were timed on the device (``pass-batches``)
            rather than taken from ``batch-size``.
        explain_batch: Cases per explanation batch, as finally used.
        halved_from: The configured batch size when the explanation batches had to be
            halved after running out of memory, else ``None``.
        not_applicable: ``(method title, reason)`` for selected methods that cannot run.
    """

    colorbar: str
    methods: tuple[MethodView, ...]
    shared_seconds: float
    device_name: str
    forward_batch: int
    backward_batch: int
    measured: bool
    explain_batch: int
    halved_from: int | None
    not_applicable: tuple[tuple[str, str], ...]


def _cost(description: MethodDescription) -> str:
    parts = []
    if description.passes.forward:
        parts.append(f"{description.passes.forward:,} forward")
    if description.passes.backward:
        parts.append(f"{description.passes.backward:,} forward+backward")
    return " + ".join(parts) if parts else "shared passes"


def _seconds_per_map(description: MethodDescription, seconds: float, maps: int) -> float | None:
    if not (description.passes.forward or description.passes.backward):
        return None  # on the shared passes
    return seconds / maps if maps else float("nan")


def method_views(explanations: Explanations) -> tuple[MethodView, ...]:
    """The methods that ran, with their cost on this run."""
    ok = explanations.records[explanations.records["status"] == "ok"]
    maps = ok.groupby("method").size().to_dict() if len(ok) else {}
    views = []
    for d in explanations.methods:
        seconds = explanations.seconds.get(d.key, 0.0)
        views.append(
            MethodView(
                key=d.key,
                title=d.title,
                paper=d.paper,
                implementation=d.implementation,
                layer=d.layer,
                steps=" → ".join(d.steps) or "none",
                settings=d.settings,
                reading=d.reading,
                caveat=d.caveat,
                cost=_cost(d),
                seconds_per_map=_seconds_per_map(d, seconds, int(maps.get(d.key, 0))),
            )
        )
    return tuple(views)


def _shared_seconds(explanations: Explanations) -> float:
    """Seconds per explained case of the gradient passes the gradient methods share."""
    n_cases = len(explanations.records.drop_duplicates(["index", "role"]))
    return explanations.seconds.get("gradient passes", 0.0) / n_cases if n_cases else 0.0


def explanations_view(inputs: AuditInputs) -> ExplanationsView:
    """The methods table, their cost on this device and the methods that could not run."""
    explanations = inputs.explanations
    batch_sizes = explanations.batch_sizes
    configured = inputs.config.batch_size
    return ExplanationsView(
        colorbar=colorbar_figure(),
        methods=method_views(explanations),
        shared_seconds=_shared_seconds(explanations),
        device_name=inputs.device_name,
        forward_batch=batch_sizes["forward"],
        backward_batch=batch_sizes["backward"],
        measured=explanations.settings.pass_batches == "measured",
        explain_batch=batch_sizes["explain"],
        halved_from=configured if batch_sizes["explain"] < configured else None,
        not_applicable=tuple(
            (METHODS[key].title, reason) for key, reason in explanations.not_applicable.items()
        ),
    )
