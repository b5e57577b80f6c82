"""Clinical analyses of the predictions: what a reviewer asks before the maps.

So far: metadata dependence (:mod:`auditor.clinical.dependence`), on groups of images
by metadata value (:mod:`auditor.clinical.groups`).
"""

from auditor.clinical.dependence import (
    ColumnDependence,
    Dependence,
    GroupRate,
    metadata_dependence,
    positive_class,
)
from auditor.clinical.settings import ClinicalSettings

__all__ = [
    "ClinicalSettings",
    "ColumnDependence",
    "Dependence",
    "GroupRate",
    "metadata_dependence",
    "positive_class",
]
