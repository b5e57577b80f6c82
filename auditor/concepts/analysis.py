"""The concept stages together: network dissection, TCAV and activation maximisation, and
their files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from auditor.concepts.data import ConceptData
from auditor.concepts.files import dissection_document, dissection_frame
from auditor.concepts.maximise import Maximised, Objective, maximise
from auditor.concepts.settings import ConceptSettings
from auditor.concepts.stage import NetworkDissection, dissect_network
from auditor.concepts.tcav_stage import ConceptTests, concept_tests
from auditor.data import Dataset
from auditor.explain.features import Stage
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind

__all__ = ["ConceptAnalysis", "analyse_concepts", "concept_documents", "concept_frames"]


@dataclass(frozen=True)
class ConceptAnalysis:
    """What the concept stages found (each ``None`` when it did not run)."""

    dissection: NetworkDissection | None = None
    tcav: ConceptTests | None = None
    maximised: Maximised | None = None


def analyse_concepts(
    model: LoadedModel, dataset: Dataset, data: ConceptData, preprocessing: Preprocessing,
    predictions: pd.DataFrame, stages: tuple[Stage, ...], settings: ConceptSettings,
    kind: OutputKind,
) -> ConceptAnalysis:  # fmt: skip
    """Dissect the spatial ``stages``, test the concepts with TCAV at the stage before the
    last (the only stage when there is one) and maximise the classes' scores and the
    dissection's top units. At the last stage before a pooled linear head, a class's
    summed gradient is the same for every image, so TCAV scores are all 0 or 1."""
    layer = stages[max(0, len(stages) - 2)].path if stages else None
    dissection = dissect_network(model, dataset, data, preprocessing, predictions, stages, settings)
    return ConceptAnalysis(
        dissection,
        concept_tests(model, dataset, data, preprocessing, predictions, layer, settings, kind),
        _maximise(model, dataset.classes, preprocessing, dissection, settings, kind),
    )


def _maximise(
    model: LoadedModel, classes: tuple[str, ...], preprocessing: Preprocessing,
    dissection: NetworkDissection | None, settings: ConceptSettings, kind: OutputKind,
) -> Maximised | None:  # fmt: skip
    """Activation maximisation of the first ``maximise-classes`` classes' (a multi-label
    model's labels') scores and of the units the dissection shows, or ``None`` when
    switched off or there is nothing to raise."""
    steps = settings.maximise_steps
    if steps is None:
        steps = 1024 if model.device.type == "cuda" else 256
    noun = "label" if kind.multi_label else "class"
    objectives = [Objective(f"{noun} {name}", k) for k, name in enumerate(classes)]
    objectives = objectives[: settings.maximise_classes]
    if dissection is not None:
        objectives += [
            Objective(f"{u.layer} unit {u.unit} ({dissection.concepts[u.concept]})", u.unit,
                      u.layer)
            for u in dissection.examples
        ]  # fmt: skip
    if steps == 0 or not objectives or preprocessing.size is None:
        return None
    return maximise(
        model, tuple(objectives), preprocessing.normalise, preprocessing.size, steps=steps,
        size=settings.maximise_size or max(preprocessing.size), lr=settings.maximise_lr,
        seed=settings.seed, kind=kind,
    )  # fmt: skip


TCAV_COLUMNS: dict[str, str] = {
    "layer": "string",
    "class": "string",
    "concept": "string",
    "score": "float64",
    "score_low": "float64",
    "score_high": "float64",
    "magnitude": "float64",
    "null_score": "float64",
    "p_value": "float64",
    "significant": "bool",
}
"""``tcav.csv``: one row per class and concept."""


def _tcav_frame(tests: ConceptTests) -> pd.DataFrame:
    rows = [
        (tests.layer, r.target, r.concept, r.score, r.score_low, r.score_high, r.magnitude,
         r.null_score,
         r.p_value, r.significant)
        for r in tests.rows
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(TCAV_COLUMNS)).astype(TCAV_COLUMNS)


def concept_frames(analysis: ConceptAnalysis) -> dict[str, pd.DataFrame]:
    """The CSV files to write, by file name."""
    frames = {}
    if analysis.dissection is not None:
        frames["dissection.csv"] = dissection_frame(analysis.dissection)
    if analysis.tcav is not None:
        frames["tcav.csv"] = _tcav_frame(analysis.tcav)
    return frames


def concept_documents(analysis: ConceptAnalysis) -> dict[str, Any]:
    """``metrics.json``'s ``dissection`` and ``tcav``."""
    tests = analysis.tcav
    tcav = None
    if tests is not None:
        tcav = {
            "layer": tests.layer,
            "runs": tests.settings.tcav_runs,
            "pseudo_concepts": tests.settings.tcav_pseudo,
            "set_size": tests.set_size,
            "alpha": tests.settings.tcav_alpha,
            "concept_images": tests.concept_images,
            "one_direction": list(tests.one_direction),
            "notes": [{"concept": c, "note": r} for c, r in tests.notes],
            "rows": _tcav_frame(tests).drop(columns="layer").to_dict(orient="records"),
        }
    return {"dissection": dissection_document(analysis.dissection), "tcav": tcav}
