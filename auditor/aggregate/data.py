"""The data section: where the images came from, how they were read, and the classes.

Above ``report-classes`` classes the class list names those with most images;
``metrics.json`` lists every class with its support.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.datasheet import (
    DUPLICATES_LISTED,
    Composition,
    Duplicate,
    composition,
    duplicates,
)
from auditor.aggregate.inputs import AuditInputs
from auditor.images import Preprocessing
from auditor.manifest import LABEL_SEPARATOR, NO_LABEL
from auditor.settings import named_path

__all__ = ["DataView", "data_view", "preprocessing_words"]


@dataclass(frozen=True)
class DataView:
    """The data section.

    Attributes:
        layout: How the data set is laid out, in words.
        n_listed: Images listed.
        n_images: Images evaluated.
        n_excluded: Files excluded (listed in the excluded-files section).
        n_missing_masks: Mask files the manifest names that do not exist.
        preprocessing: How an image file became the model's input, in words.
        n_classes: Classes of the model's output.
        n_classes_with_images: Classes with at least one image evaluated.
        every_class: Whether ``classes`` lists every class.
        classes: ``(output index, class, images evaluated, share of the images)``: every
            class in output order, or, above ``report-classes`` classes, those with most
            images (classes without images are counted, not listed); a multi-label
            model's labels, each with the images that have it.
        multi_label: Whether the classes are a multi-label model's labels.
        declared: ``(label, value)`` of the declared ``[data-details]``.
        composition: Label × value counts per metadata column (the datasheet).
        not_tabulated: ``(column, reason)`` for columns with too many values.
        duplicates: Groups of identical files (at most :data:`DUPLICATES_LISTED`).
        n_duplicate_groups: All such groups.
        n_duplicate_images: Images in them.
        n_conflicting: Groups whose files carry different labels.
    """

    source: str
    layout: str
    n_listed: int
    n_images: int
    n_excluded: int
    has_masks: bool
    n_missing_masks: int
    metadata_columns: tuple[str, ...]
    preprocessing: str
    data_sha256: str
    n_classes: int
    n_classes_with_images: int
    every_class: bool
    classes: tuple[tuple[int, str, int, float], ...]
    multi_label: bool
    declared: tuple[tuple[str, str], ...]
    composition: tuple[Composition, ...]
    not_tabulated: tuple[tuple[str, str], ...]
    duplicates: tuple[Duplicate, ...]
    n_duplicate_groups: int
    n_duplicate_images: int
    n_conflicting: int


def preprocessing_words(preprocessing: Preprocessing) -> str:
    """E.g. "read as RGB, scaled to [0, 1]; no resizing; no normalisation"."""
    colour = "RGB" if preprocessing.channels == 3 else "grayscale"
    resizing = (
        f"shorter side resized to {preprocessing.image_size} px and centre-cropped"
        if preprocessing.image_size
        else "no resizing"
    )
    normalisation = (
        f"normalised with mean {', '.join(map(str, preprocessing.mean))} and std "
        f"{', '.join(map(str, preprocessing.std or ()))}"
        if preprocessing.mean
        else "no normalisation"
    )
    return f"read as {colour}, scaled to [0, 1]; {resizing}; {normalisation}"


def data_view(inputs: AuditInputs) -> DataView:
    """The data set's source, layout, masks, metadata, preprocessing and class counts."""
    dataset, evaluation = inputs.dataset, inputs.evaluation
    counts = evaluation.class_counts
    listed = list(enumerate(counts))
    if len(listed) > inputs.config.report_classes:
        with_images = [item for item in listed if item[1][1] > 0]
        listed = sorted(with_images, key=lambda item: (-item[1][1], item[0]))
        listed = listed[: inputs.config.report_classes]
    predictions = evaluation.predictions
    names = tuple(name for name, _ in counts)
    columns = tuple(c for c in dataset.metadata_columns if c != inputs.config.patient_column)
    by_label = predictions
    if dataset.multi_label:  # one row per (image, label): images per label and value
        by_label = predictions.assign(label=predictions["label"].str.split(LABEL_SEPARATOR))
        by_label, names = by_label.explode("label"), (*names, NO_LABEL)
    tables, not_tabulated = composition(by_label, columns, names, inputs.config.clinical.max_groups)
    copies = duplicates(predictions)
    n_images = max(evaluation.n_images, 1)
    return DataView(
        source=named_path(dataset.source),
        layout="class folders" if dataset.layout == "folder" else "CSV manifest",
        n_listed=len(dataset.samples),
        n_images=evaluation.n_images,
        n_excluded=len(evaluation.excluded),
        has_masks=dataset.has_masks,
        n_missing_masks=len(dataset.missing_masks),
        metadata_columns=dataset.metadata_columns,
        preprocessing=preprocessing_words(inputs.preprocessing),
        data_sha256=evaluation.data_sha256,
        n_classes=len(counts),
        n_classes_with_images=sum(n > 0 for _, n in counts),
        every_class=len(listed) == len(counts),
        classes=tuple((k, name, n, n / n_images) for k, (name, n) in listed),
        multi_label=dataset.multi_label,
        declared=inputs.config.documentation.rows("data-details"),
        composition=tables,
        not_tabulated=not_tabulated,
        duplicates=copies[:DUPLICATES_LISTED],
        n_duplicate_groups=len(copies),
        n_duplicate_images=sum(len(d.paths) for d in copies),
        n_conflicting=sum(d.conflicting for d in copies),
    )
