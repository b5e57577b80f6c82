"""The run's pass plan: the model passes each stage will take, counted before it runs.

At the start of a run (after the model is loaded and profiled), every stage that runs
the model is counted from the settings and the data: the evaluation and the robustness
suite exactly, the others as an upper bound where their count depends on what earlier
stages find (how many images are misclassified, how many units the dissection labels,
how soon a counterfactual search succeeds). The time estimate multiplies the passes, in
forward-pass units (a forward+backward pass counts :data:`BACKWARD_COST`), by the
profile's measured time per image at the run's batch size. The plan is printed before
the first stage and shown in the report beside each stage's actual time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auditor.concepts.stage import EXAMPLE_UNITS
from auditor.config import AuditConfig
from auditor.events import emit
from auditor.explain.base import PassCount
from auditor.explain.batching import CANDIDATE_BATCHES
from auditor.explain.engine import build_context, describe
from auditor.explain.features import FEATURE_IMAGES
from auditor.measure.budget import BACKWARD_COST, Protocol, curve_units, plan_trust, shared_passes
from auditor.robustness.stage import variants

if TYPE_CHECKING:  # the outputs module imports the report, whose views read the plan
    from auditor.outputs import Loaded

__all__ = ["RunPlan", "StagePlan", "announce_plan", "passes_text", "plan_run"]


@dataclass(frozen=True)
class StagePlan:
    """One stage's model passes (per image: a batch of ``B`` images counts ``B``).

    Attributes:
        stage: The stage's name, as its events name it.
        forward: Forward passes without gradients.
        backward: Forward+backward passes.
        at_most: Whether the count is an upper bound.
        what: What the passes are, in words.
        in_units: Whether ``forward`` counts forward-pass units (the trust stage's
            plan, whose recomputed maps mix both kinds of pass) rather than passes.
    """

    stage: str
    forward: int
    backward: int
    at_most: bool
    what: str
    in_units: bool = False

    @property
    def units(self) -> int:
        """Forward-pass units."""
        return self.forward + BACKWARD_COST * self.backward


@dataclass(frozen=True)
class RunPlan:
    """Every stage's passes and the time one forward pass of one image took.

    Attributes:
        stages: The stages that run the model, in run order (stages with no pass left out).
        pass_seconds: Seconds per image of a forward pass at the run's batch size
            (the architecture profile's throughput).
    """

    stages: tuple[StagePlan, ...]
    pass_seconds: float

    def seconds(self, stage: StagePlan) -> float:
        """The estimated time of ``stage``."""
        return stage.units * self.pass_seconds

    @property
    def total_seconds(self) -> float:
        """The estimated time of every counted stage."""
        return sum(self.seconds(s) for s in self.stages)

    def lines(self) -> list[str]:
        """One line per stage, for the log: ``explain: at most 1,234 forward + … ≈ 12 s``."""
        return [
            f"{s.stage}: {'at most ' if s.at_most else ''}{passes_text(s)} "
            f"({s.what}), {_duration(self.seconds(s))}"
            for s in self.stages
        ]


def passes_text(stage: StagePlan) -> str:
    """``1,200 forward + 30 forward+backward passes`` (or ``… forward-pass units``)."""
    if stage.in_units:
        return f"{stage.forward:,} forward-pass units"
    parts = []
    if stage.forward:
        parts.append(f"{stage.forward:,} forward")
    if stage.backward:
        parts.append(f"{stage.backward:,} forward+backward")
    return " + ".join(parts) + " passes"


def _duration(seconds: float) -> str:
    """``about 12 s``, ``about 3 min``, ``under 1 s``."""
    if seconds < 1:
        return "under 1 s"
    return f"about {seconds:.0f} s" if seconds < 90 else f"about {seconds / 60:.0f} min"


def _method_passes(
    config: AuditConfig, loaded: Loaded
) -> tuple[dict[str, PassCount], tuple[str, ...], int]:
    """Per explained image: each method's own passes, the methods that read the shared
    gradient passes, and those passes' units (Score-CAM: a pass per channel of the
    target layer, read from the profile)."""
    context, methods, _ = build_context(
        loaded.model, loaded.kind, loaded.layer, config.explain, loaded.preprocessing
    )
    shapes = {layer.path: layer.output_shape for layer in loaded.profile.layers}
    shape = shapes.get(loaded.layer or "", ())
    context.layer_channels = int(shape[0] if len(shape) == 3 else shape[-1] if shape else 0)
    size = loaded.preprocessing.size or (0, 0)
    passes = {m.key: describe(m, context, size).passes for m in methods}
    return (passes, *shared_passes(methods))


def _cases(config: AuditConfig, n: int) -> int:
    """The most cases the explain stage can have: two per selected image."""
    return 2 * min(2 * config.explain_samples, n)


def _explain_and_trust(config: AuditConfig, loaded: Loaded, n: int) -> list[StagePlan]:
    """At most ``explain-samples`` sampled and as many misclassified images, each twice
    (a misclassified one for its predicted and its true class), plus the feature maps'
    passes and the batch-size timing's; the trust checks as :func:`plan_trust` plans
    them for that many cases, bounded whether or not the budget can be met."""
    cases, trust = _cases(config, n), config.trust
    passes, readers, shared = _method_passes(config, loaded)
    timing = 3 * sum(CANDIDATE_BATCHES) if config.explain.pass_batches == "measured" else 0
    forward = cases * (sum(p.forward for p in passes.values()) + shared) + FEATURE_IMAGES
    explain = StagePlan(
        "explain", forward + timing, cases * sum(p.backward for p in passes.values()) + timing,
        True, f"{cases} cases at most, each method's own passes and the shared gradient passes",
    )  # fmt: skip
    curves = cases * curve_units(len(passes), trust.deletion_steps)
    full = Protocol(
        min(trust.trust_images, cases), trust.randomisation_steps, trust.stability_samples
    )
    plan = plan_trust(0, full, passes, readers, shared, cases, curves)
    bound = plan.full_total
    if trust.trust_budget:
        bound = min(bound, max(math.ceil(trust.trust_budget * plan.explain), plan.unmet_total))
    checks = StagePlan(
        "trust", bound, 0, True,
        f"deletion and insertion curves, and maps recomputed within {trust.trust_budget:g}x "
        "the explain stage" if trust.trust_budget else "curves and the full protocol", True,
    )  # fmt: skip
    return [explain, checks]


def _concepts(config: AuditConfig, loaded: Loaded, n: int) -> StagePlan:
    """Dissection (one forward pass per image), TCAV and activation maximisation."""
    concepts = config.dissection
    dissected = min(concepts.dissection_images, n) if loaded.concepts.names else 0
    tested = len(loaded.concepts.tested) if concepts.tcav_runs else 0
    per_set = concepts.tcav_images
    tcav = tested * per_set * (1 + concepts.tcav_runs + concepts.tcav_pseudo)
    tcav_backward = len(loaded.dataset.classes) * per_set if tested else 0
    steps = concepts.maximise_steps
    if steps is None:
        steps = 1024 if loaded.device.type == "cuda" else 256
    objectives = min(concepts.maximise_classes, len(loaded.dataset.classes))
    objectives += EXAMPLE_UNITS if dissected else 0
    maximised = objectives if steps else 0  # a last forward pass reads each result
    return StagePlan(
        "concepts", dissected + tcav + maximised, tcav_backward + steps * objectives, True,
        f"dissection of {dissected} images, TCAV of {tested} concepts, "
        f"{objectives} images maximised at most",
    )  # fmt: skip


def plan_run(config: AuditConfig, loaded: Loaded) -> RunPlan:
    """The passes of every stage that runs the model, before any of them runs."""
    n = len(loaded.dataset.samples)
    perturbations = len(variants(config.robustness))
    robust = min(config.robustness.robustness_images, n) * perturbations
    counterfactual = config.counterfactuals
    cases = min(counterfactual.counterfactual_images, _cases(config, n))
    each = f"{cases} cases"
    if loaded.dataset.multi_label:  # a misclassified image: a search per wrong call
        labels = min(counterfactual.counterfactual_labels, len(loaded.dataset.classes))
        each = f"{each}, up to {labels} labels each"
        cases *= labels
    searches = StagePlan(  # each search: a segment search to its cap and its re-check; the
        # gradient search's steps, its ranking pass and its re-check
        "counterfactuals", cases * (counterfactual.counterfactual_passes + 3),
        cases * counterfactual.wachter_steps, True, f"{each}, each search to its cap",
    )  # fmt: skip
    training = len(loaded.train.samples) if loaded.train is not None else 0
    stages = [
        StagePlan("evaluate", n, 0, False, f"{n} images"),
        StagePlan(
            "robustness", robust, 0, False, f"{perturbations} perturbed copies of each image"
        ),
        _concepts(config, loaded, n),
        *_explain_and_trust(config, loaded, n),
        StagePlan("similarity", training, 0, False, f"{training} training images' embeddings"),
        searches,
    ]
    throughput = loaded.profile.throughput
    return RunPlan(tuple(s for s in stages if s.units), 1.0 / throughput if throughput > 0 else 0.0)


def announce_plan(plan: RunPlan) -> None:
    """Emit the plan: one ``plan`` event per stage, then the whole run's estimate."""
    for stage, line in zip(plan.stages, plan.lines(), strict=True):
        emit(
            "plan", stage.stage, text=line, forward=stage.forward, backward=stage.backward,
            at_most=stage.at_most, estimated_seconds=round(plan.seconds(stage), 3),
        )  # fmt: skip
    emit(
        "plan",
        text=f"{_duration(plan.total_seconds)} in all at most, from "
        f"{plan.pass_seconds * 1e3:.2f} ms per image for a forward pass",
        estimated_seconds=round(plan.total_seconds, 3),
    )
