"""Sparseness of maps: the Gini index of the absolute map (Chalasani et al., 2020).

"Concise Explanations of Neural Networks using Adversarial Training", ICML 2020: 0 for a
map spread evenly, 1 for a map on one pixel (Quantus's ``Sparseness``; the index itself
is :func:`auditor.measure.similarity.gini`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from auditor.measure.check import Check, Evidence, MapRun
from auditor.measure.records import Records, TrustCase
from auditor.measure.similarity import gini

__all__ = ["Sparseness"]


class Sparseness(Check):
    """Gini index of each map, averaged per method (descriptive: no judgement)."""

    key = "gini"
    title = "Gini"
    columns: ClassVar[dict[str, str]] = {"gini": "float64"}
    numeric = True

    def measure_case(
        self,
        run: MapRun,
        case: TrustCase,
        target: str,
        maps: dict[str, np.ndarray],
        records: Records,
    ) -> None:
        if maps:
            for key, value in zip(maps, gini(np.stack(list(maps.values()))), strict=True):
                records.add(case, target, key, "gini", float(value))

    def summarise(self, evidence: Evidence, method: str) -> dict[str, object]:
        return {"gini": evidence.values(method, "gini").mean()}

    def describe(self, row: pd.Series) -> str:
        return "—" if pd.isna(row["gini"]) else f"{row['gini']:.2f}"
