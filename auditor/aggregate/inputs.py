"""What the report's views are built from: every stage's output and the run's identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.architecture import ArchitectureProfile
from auditor.clinical import Clinical
from auditor.compare.comparison import Comparison
from auditor.concepts.analysis import ConceptAnalysis
from auditor.config import AuditConfig
from auditor.counterfactual.stage import Counterfactuals
from auditor.data import Dataset
from auditor.evaluate import Evaluation
from auditor.explain.engine import Explanations
from auditor.images import Preprocessing
from auditor.measure import Trust
from auditor.policy import PolicyResult
from auditor.robustness import Robustness
from auditor.select import Selection
from auditor.similarity.analysis import Similarity

if TYPE_CHECKING:  # the plan reads the loaded model, whose module imports the report
    from auditor.plan import RunPlan

__all__ = ["AuditInputs"]


@dataclass(frozen=True)
class AuditInputs:
    """The stage outputs one report describes.

    The views read settings from the stage outputs that ran with them
    (``evaluation.settings``, ``trust.settings``); from ``config`` they read only the
    run-level ``model``, ``seed`` and ``batch_size`` and the resolved-configuration table.

    Attributes:
        config: The resolved configuration.
        dataset: The validation set as found on disk.
        preprocessing: How image files became model inputs.
        evaluation: Predictions, exclusions and metrics.
        architecture: The model's structure and cost.
        explanations: The explained cases' maps.
        trust: The trust checks' results.
        clinical: The operating point and metadata dependence.
        robustness: The robustness suite, or ``None`` when it was switched off.
        concepts: Network dissection and TCAV (each ``None`` when it did not run).
        similarity: The embedding's projections, neighbours and duplicates, or ``None``
            when no embedding was kept.
        counterfactuals: The explained cases' counterfactuals, or ``None`` when none ran.
        policy: The acceptance criteria judged on ``metrics.json``.
        selection: Which images were explained.
        command: The command line of the run.
        versions: ``(package, version)`` pairs.
        device_name: The device in words, e.g. ``cpu (x86_64, 8 threads)``.
        started: Start time, UTC, ``YYYY-MM-DD HH:MM:SS``.
        finished: End time, same format.
        auditor_version: Auditor's version.
        comparison: The comparison with the previous audit of this model's name in the
            history (``None``: there is none).
        comparison_note: Why there is no comparison though the history has earlier runs
            of this model's name (``""`` otherwise).
        plan: The passes each stage was planned to take (``None``: not planned).
        stage_seconds: Seconds each stage took, by its name.
        resumed: The stages and parts read back from an interrupted run's checkpoint.
    """

    config: AuditConfig
    dataset: Dataset
    preprocessing: Preprocessing
    evaluation: Evaluation
    architecture: ArchitectureProfile
    explanations: Explanations
    trust: Trust
    clinical: Clinical
    robustness: Robustness | None
    concepts: ConceptAnalysis
    similarity: Similarity | None
    counterfactuals: Counterfactuals | None
    policy: PolicyResult
    selection: Selection
    command: str
    versions: tuple[tuple[str, str], ...]
    device_name: str
    started: str
    finished: str
    auditor_version: str
    comparison: Comparison | None = None
    comparison_note: str = ""
    plan: RunPlan | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    resumed: tuple[str, ...] = ()
