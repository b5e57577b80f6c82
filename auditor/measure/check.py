"""What a trust check is: its columns in ``trust.csv``, its judgement, its words in the report.

A check is a small class in its own module (``faithfulness.py``, ``localisation.py``…),
registered once in :data:`auditor.measure.registry.CHECKS`; the verdict table's columns,
its summaries per method and the report's verdict table all follow that registry. A
check read from the explained maps themselves also measures each case
(:meth:`Check.measure_case`); the checks that recompute maps (randomisation,
stability) run as their own steps of the measure stage and only summarise here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from auditor.explain import ExplainContext
from auditor.measure.records import Records, TrustCase, TrustSettings

__all__ = ["NOT_MEASURED", "Check", "Curves", "Evidence", "MapRun", "judge"]

NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Evidence:
    """Every usable trust record, and what summarising them needs.

    Attributes:
        records: The records with status ``ok``.
        last_step: Label of the randomisation cascade's last step, or ``None`` if it
            did not run.
        randomisation_threshold: Rank correlation at or above which a method fails.
        instability_threshold: Map instability above which a method is unstable.
        seed: Seed of the bootstrap intervals.
    """

    records: pd.DataFrame
    last_step: str | None
    randomisation_threshold: float
    instability_threshold: float
    seed: int

    def values(self, method: str, measure: str, step: str = "") -> pd.Series:
        """One value per ``(index, role)`` of ``method``'s ``measure`` (at ``step``)."""
        records = self.records
        chosen = records[
            (records["method"] == method)
            & (records["measure"] == measure)
            & (records["step"] == step)
        ]
        return chosen.set_index(["index", "role"])["value"]


Curves = dict[str, tuple[np.ndarray, np.ndarray, int]]
"""Method → summed ``(deletion, insertion)`` curves and how many were summed."""


@dataclass
class MapRun:
    """What the checks read from the explained maps share while they measure.

    Attributes:
        context: The explain stage's methods' context (faithfulness runs the model).
        settings: The checks' settings.
        masks: Sample index → ``(H, W)`` bool mask or why it cannot be used; empty
            without masks.
        curves: Method (and ``random``) → summed ``(deletion, insertion)`` curves and
            their count, for the report's mean curves.
    """

    context: ExplainContext
    settings: TrustSettings
    masks: dict[int, np.ndarray | str]
    curves: Curves

    def add_curves(self, method: str, deletion: np.ndarray, insertion: np.ndarray) -> None:
        """Add one map's deletion and insertion curves to the method's sums."""
        old = self.curves.get(method, (np.zeros_like(deletion), np.zeros_like(insertion), 0))
        self.curves[method] = (old[0] + deletion, old[1] + insertion, old[2] + 1)

    def mean_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Method → mean ``(deletion, insertion)`` curves."""
        return {m: (d / n, i / n) for m, (d, i, n) in self.curves.items()}


def judge(low: float, high: float, above: str, below: str, between: str) -> str:
    """A judgement from a 95% CI against 0 (``not measured`` without one)."""
    if np.isnan(low):
        return NOT_MEASURED
    return above if low > 0 else below if high < 0 else between


class Check(ABC):
    """A trust check as the verdict table and the report see it.

    Attributes:
        key: Its judgement's column in ``trust.csv`` (``"faithfulness"``).
        title: Its column's header in the report's verdict table.
        columns: The ``trust.csv`` columns it contributes, in order, with their dtypes.
        numeric: Whether its report cell is a number (right-aligned).
    """

    key: ClassVar[str]
    title: ClassVar[str]
    columns: ClassVar[dict[str, str]]
    numeric: ClassVar[bool] = False

    def measure_case(
        self,
        run: MapRun,
        case: TrustCase,
        target: str,
        maps: dict[str, np.ndarray],
        records: Records,
    ) -> None:
        """Measure the maps of one explained case into ``records`` (checks that read the
        maps themselves; the others measure in their own step)."""
        return None

    @abstractmethod
    def summarise(self, evidence: Evidence, method: str) -> dict[str, object]:
        """The method's values of :attr:`columns`, from the records."""

    @abstractmethod
    def describe(self, row: pd.Series) -> str:
        """The report's cell for one row of ``trust.csv``."""
