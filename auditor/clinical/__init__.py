"""Clinical analyses of the predictions: what a reviewer asks before the maps.

So far: the operating point of the positive class (:mod:`auditor.clinical.operating`)
and metadata dependence (:mod:`auditor.clinical.dependence`), on groups of images by
metadata value (:mod:`auditor.clinical.groups`); :mod:`auditor.clinical.analysis` runs
them together.
"""

from auditor.clinical.analysis import Clinical, analyse_predictions
from auditor.clinical.dependence import (
    ColumnDependence,
    Dependence,
    GroupRate,
    metadata_dependence,
    positive_class,
)
from auditor.clinical.operating import Operating, operating_point
from auditor.clinical.rates import Rate
from auditor.clinical.settings import ClinicalSettings

__all__ = [
    "Clinical",
    "ClinicalSettings",
    "ColumnDependence",
    "Dependence",
    "GroupRate",
    "Operating",
    "Rate",
    "analyse_predictions",
    "metadata_dependence",
    "operating_point",
    "positive_class",
]
