"""The trust checks, registered once, in the order of ``trust.csv``'s columns and the
report's verdict table (see :class:`auditor.measure.check.Check`)."""

from __future__ import annotations

from auditor.measure.check import Check
from auditor.measure.faithfulness import Faithfulness
from auditor.measure.localisation import Localisation
from auditor.measure.randomisation import Randomisation
from auditor.measure.sparseness import Sparseness
from auditor.measure.stability import Stability

__all__ = ["CHECKS"]

CHECKS: tuple[Check, ...] = (
    Randomisation(),
    Faithfulness(),
    Stability(),
    Localisation(),
    Sparseness(),
)
