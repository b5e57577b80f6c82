"""Measure stage: whether each explanation method can be trusted for this model."""

from auditor.measure.records import RECORD_DTYPES, TrustCase, TrustSettings
from auditor.measure.trust import Trust, measure_trust, trusted_methods

__all__ = [
    "RECORD_DTYPES",
    "Trust",
    "TrustCase",
    "TrustSettings",
    "measure_trust",
    "trusted_methods",
]
