"""What the model sees as similar, for the report: which variables organise the
embedding, its projections, near-duplicates, leakage and the explained cases' nearest
neighbours. Every figure in a sentence is read from the stage's records, which the
run folder's CSVs hold (``agreement.csv``, ``duplicates.csv``, ``leakage.csv``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from auditor.aggregate.figures import figure_uri, image_tile, styled_figure
from auditor.aggregate.inputs import AuditInputs
from auditor.images import make_loader
from auditor.report.format import p_value, shorten, whole_percent
from auditor.similarity.analysis import Similarity
from auditor.similarity.files import duplicates_frame
from auditor.similarity.projection import Projection

__all__ = ["SimilarityView", "similarity_findings", "similarity_limitation", "similarity_view"]

SHOWN_CASES = 6
"""Explained cases shown with their nearest neighbours."""

COLOURS = 20
"""Values a projection panel colours apart; the rest are drawn together."""

SHOWN_PAIRS = 20
"""Near-duplicate or leakage pairs listed (the CSV has them all)."""


@dataclass(frozen=True)
class AgreementRow:
    variable: str
    values: int
    observed: float
    expected: float
    p_value: float
    p_holm: float | None
    within_class: bool


@dataclass(frozen=True)
class NeighbourTile:
    image: str
    caption: str


@dataclass(frozen=True)
class CaseNeighbours:
    """An explained case and its nearest validation images."""

    path: str
    caption: str
    image: str
    neighbours: tuple[NeighbourTile, ...]


Pair = tuple[str, str, str, float, bool]
"""A listed pair: two paths, their labels, cosine similarity, byte-identical."""


@dataclass(frozen=True)
class SimilarityView:
    """The similarity sections (main body and appendices).

    Attributes:
        embedding: Where the embedding was read, in words.
        findings: The sentences of the findings (also on page one).
        rows: Each variable's neighbour agreement.
        projections: ``(method, detail, trustworthiness, explained variance of the two
            components shown)``; the last is ``None`` but for PCA.
        stratum: What the other variables are permuted within: the class, or a multi-label
            model's set of labels.
        alone: How many images no permutation moves, in words ("" when none).
        figure: Every projection by every variable (the stratum, correct, metadata
            columns).
        duplicates: The first near-duplicate pairs ``(path, path, labels, cosine, identical)``.
        leakage: The first training-validation pairs, as ``duplicates``.
        cases: The explained cases with their nearest neighbours.
    """

    embedding: str
    stratum: str
    alone: str
    dimensions: int
    images: int
    neighbours: int
    permutations: int
    findings: tuple[str, ...]
    rows: tuple[AgreementRow, ...]
    projections: tuple[tuple[str, str, float, float | None], ...]
    figure: str
    duplicate_rule: str
    duplicates: tuple[Pair, ...]
    n_duplicates: int
    leakage: tuple[Pair, ...]
    n_leakage: int
    training_images: int
    shared_patients: int
    cases: tuple[CaseNeighbours, ...]
    shown_neighbours: int
    seconds: float


def similarity_findings(similarity: Similarity | None) -> tuple[str, ...]:
    """The sentences of the findings: each variable that organises the embedding beyond
    the class, the near-duplicate pairs that are not byte-identical, and leakage."""
    if similarity is None:
        return ()
    found = []
    k = similarity.settings.agreement_neighbours
    tested = len(similarity.holm)
    for a, p in similarity.organised_by():
        found.append(
            f"The embedding groups images by {a.variable} beyond their {similarity.stratum}: "
            f"{whole_percent(a.observed)} of an image's {k} nearest neighbours share its value, "
            f"against {whole_percent(a.expected)} with the values permuted within each "
            f"{similarity.stratum} "
            f"(p = {p_value(p)}, Holm over {tested} variables)."
        )
    near = similarity.duplicates
    similar = int((~near.identical).sum())
    if similar:
        disagree = int((~near.identical & ~near.same_label).sum())
        found.append(
            f"{similar} pairs of validation images are near-duplicates in the embedding "
            f"(cosine similarity at least {near.threshold:.6f}) without being "
            f"byte-identical; {disagree} of them have different labels."
        )
    leakage = similarity.leakage
    if leakage is not None and (len(leakage.pairs) or leakage.shared_patients):
        identical = int(leakage.pairs["identical"].sum())
        patients = (
            f"; {len(leakage.shared_patients)} patients ({leakage.patient_column}) are in both sets"
            if leakage.shared_patients
            else ""
        )
        found.append(
            f"Possible leakage: {leakage.pairs['train_path'].nunique()} of the "
            f"{leakage.images:,} training images nearly duplicate a validation image "
            f"({len(leakage.pairs)} pairs, {identical} byte-identical){patients}."
        )
    return tuple(found)


def similarity_limitation(similarity: Similarity | None) -> str:
    """The findings in one short sentence for the limitations ("" when there is none)."""
    if similarity is None:
        return ""
    parts = []
    if organised := [a.variable for a, _ in similarity.organised_by()]:
        parts.append(
            f"the embedding groups images by {' and by '.join(organised)} beyond their "
            f"{similarity.stratum}"
        )
    near = similarity.duplicates
    if similar := int((~near.identical).sum()):
        parts.append(f"{similar} validation pairs are near-duplicates")
    leakage = similarity.leakage
    if leakage is not None and len(leakage.pairs):
        leaked = leakage.pairs["train_path"].nunique()
        parts.append(f"{leaked} training images nearly duplicate validation ones")
    if leakage is not None and leakage.shared_patients:
        parts.append(f"{len(leakage.shared_patients)} patients are in both sets")
    text = "; ".join(parts)
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def _alone(similarity: Similarity, images: int) -> str:
    """The images alone in their stratum, whose values no permutation moves, in words."""
    if not similarity.alone:
        return ""
    return (
        f"{similarity.alone:,} of the {images:,} images are alone in their "
        f"{similarity.stratum}: no permutation moves their values, so the variables are "
        f"tested on the other {images - similarity.alone:,} (the lone ones add the same to "
        f"both shares, so a grouping is harder to find and looks smaller)."
    )


def _duplicate_rule(threshold: float, share: float) -> str:
    """Which pairs are near-duplicates, in words."""
    if math.isinf(threshold):
        return (
            "pairs of validation images whose files are byte-identical (most images lie at "
            "distance 0 from their nearest neighbour in this embedding, which cannot tell "
            "near-duplicates apart)"
        )
    return (
        f"pairs of validation images whose embeddings are closer than {share:g} "
        "(duplicate-distance) of the median distance from an image to its nearest neighbour "
        f"(cosine similarity at least {threshold:.6f}), or whose files are byte-identical"
    )


def _colourings(inputs: AuditInputs, similarity: Similarity) -> dict[str, pd.Series]:
    predictions = inputs.evaluation.predictions.reset_index(drop=True)
    colourings = {
        similarity.stratum: predictions["label"].astype(str),
        "correct": predictions["correct"].map({True: "correct", False: "error"}).astype(str),
    }
    for name, values in inputs.clinical.grouping.groups.items():
        colourings[name] = values.reset_index(drop=True).astype(str)
    return colourings


def _panel(axes: Axes, projection: Projection, values: pd.Series, title: str) -> None:
    """One projection coloured by ``values``: each of the :data:`COLOURS` most frequent,
    the rest together as "other" (a multi-label model's sets of labels can be many)."""
    counts = values.value_counts(sort=True)
    many = len(counts) > COLOURS
    names = sorted(counts.index[: COLOURS - 1] if many else counts.index)
    shown = values.iloc[projection.rows].to_numpy()
    groups = [(shorten(name, 18), shown == name) for name in names]
    if many:
        groups.append((f"{len(counts) - len(names)} others", ~np.isin(shown, names)))
    palette = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
    for i, (name, mine) in enumerate(groups):
        x, y = projection.points[mine, 0], projection.points[mine, 1]
        axes.scatter(x, y, s=6, color=palette(i % palette.N), label=name, linewidths=0)
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(fontsize=6, markerscale=1.5, frameon=False, loc="best")


def _figure(
    projections: tuple[Projection, ...], colourings: dict[str, pd.Series], columns: int = 3
) -> str:
    """Each projection coloured by each variable, ``columns`` panels a row."""
    panels = [(p, name) for p in projections for name in colourings]
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    with styled_figure(7.0, 2.3 * rows) as figure:
        grid = figure.subplots(rows, columns, squeeze=False)
        for axes, (projection, name) in zip(grid.flat, panels, strict=False):
            title = f"{projection.method}: {shorten(name, 20)}"
            _panel(axes, projection, colourings[name], title)
        for axes in grid.flat[len(panels) :]:
            axes.set_axis_off()
        figure.tight_layout()
        return figure_uri(figure)


def _cases(inputs: AuditInputs, similarity: Similarity) -> tuple[CaseNeighbours, ...]:
    predictions = inputs.evaluation.predictions.reset_index(drop=True)
    k = similarity.settings.neighbours
    display = replace(inputs.preprocessing, mean=None, std=None)
    shown = []
    for case in similarity.cases[:SHOWN_CASES]:
        rows = [case, *similarity.neighbours.index[case, :k].tolist()]
        samples = [inputs.dataset.samples[int(predictions["index"].iloc[r])] for r in rows]
        batch = next(iter(make_loader(samples, display, len(samples))))
        if len(batch.failures):
            continue
        tiles = [image_tile(image.permute(1, 2, 0).numpy()) for image in batch.images]
        cosines = similarity.neighbours.similarity[case, :k]
        neighbours = tuple(
            NeighbourTile(tile, f"{_call(predictions, r)}, cosine {c:.3f}")
            for tile, r, c in zip(tiles[1:], rows[1:], cosines, strict=True)
        )
        path = str(predictions["path"].iloc[case])
        shown.append(CaseNeighbours(path, _call(predictions, case), tiles[0], neighbours))
    return tuple(shown)


def _call(predictions: pd.DataFrame, row: int) -> str:
    """``"benign → malignant"``: the label and the model's call."""
    return f"{predictions['label'].iloc[row]} → {predictions['prediction'].iloc[row]}"


def _pairs(frame: pd.DataFrame, first: str, second: str, labels: str) -> tuple[Pair, ...]:
    return tuple(
        (str(r[first]), str(r[second]), str(r[labels]), float(r["cosine"]), bool(r["identical"]))
        for _, r in frame.head(SHOWN_PAIRS).iterrows()
    )


def similarity_view(inputs: AuditInputs) -> SimilarityView | None:
    similarity = inputs.similarity
    if similarity is None:
        return None
    colourings = _colourings(inputs, similarity)
    duplicates = duplicates_frame(similarity, inputs.evaluation.predictions)
    duplicates["labels"] = duplicates["label_a"] + " / " + duplicates["label_b"]
    leakage = similarity.leakage
    leaked = pd.DataFrame(columns=["train_path", "path", "labels", "cosine", "identical"])
    if leakage is not None:
        leaked = leakage.pairs.assign(labels="")
    return SimilarityView(
        embedding=similarity.site.description,
        stratum=similarity.stratum,
        alone=_alone(similarity, len(inputs.evaluation.predictions)),
        dimensions=similarity.dimensions,
        images=len(inputs.evaluation.predictions),
        neighbours=similarity.settings.agreement_neighbours,
        permutations=similarity.settings.agreement_permutations,
        findings=similarity_findings(similarity),
        rows=tuple(
            AgreementRow(a.variable, a.values, a.observed, a.expected, a.p_value, p, a.within_class)
            for a, p in zip(similarity.agreements, (None, None, *similarity.holm), strict=True)
        ),
        projections=tuple(
            (p.method, p.detail, p.trustworthiness, sum(p.explained[:2]) if p.explained else None)
            for p in similarity.projections
        ),
        figure=_figure(similarity.projections, colourings),
        duplicate_rule=_duplicate_rule(
            similarity.duplicates.threshold, similarity.settings.duplicate_distance
        ),
        duplicates=_pairs(duplicates, "path_a", "path_b", "labels"),
        n_duplicates=len(duplicates),
        leakage=_pairs(leaked, "train_path", "path", "labels"),
        n_leakage=len(leaked),
        training_images=leakage.images if leakage else 0,
        shared_patients=len(leakage.shared_patients) if leakage else 0,
        cases=_cases(inputs, similarity),
        shown_neighbours=similarity.settings.neighbours,
        seconds=similarity.seconds,
    )
