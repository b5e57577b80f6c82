"""Failure modes: counts equal a recount, confident missed positives come first."""

from __future__ import annotations

import pandas as pd

from auditor.clinical import ClinicalSettings
from auditor.clinical.failures import failure_modes
from auditor.clinical.groups import metadata_groups


def test_confident_errors_are_counted_and_missed_positives_listed_first() -> None:
    predictions = pd.DataFrame(
        {
            "path": ["a", "b", "c", "d", "e", "f"],
            "label": ["benign", "benign", "malignant", "malignant", "malignant", "benign"],
            "prediction": ["malignant", "malignant", "benign", "benign", "malignant", "benign"],
            "confidence": [0.99, 0.6, 0.95, 0.91, 0.97, 0.8],
            "site": ["x", "x", "y", "y", "x", "y"],
        }
    )

    by_site = metadata_groups(predictions, ("site",), ClinicalSettings().max_groups)
    failures = failure_modes(
        predictions, by_site, ("benign", "malignant"), "malignant", ClinicalSettings()
    )

    assert [(c.label, c.n, c.errors, c.confident) for c in failures.by_class] == [
        ("benign", 3, 2, 1),
        ("malignant", 3, 2, 2),
    ]
    assert [e.path for e in failures.confident] == ["c", "d", "a"], "missed first, then sure"
    assert failures.n_missed == 2
    assert [(v.value, v.n, v.errors) for v in failures.by_value] == [("x", 3, 2), ("y", 3, 2)]
