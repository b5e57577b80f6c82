"""Compare two audits: metrics before and after (paired on the same images), McNemar's
test, and drift of the inputs, the predictions and the explanations."""

from auditor.compare.audits import Audit, read_audit
from auditor.compare.comparison import COMPARED, Comparison, compare_audits
from auditor.compare.files import comparison_document, findings, gate_values

__all__ = [
    "COMPARED",
    "Audit",
    "Comparison",
    "compare_audits",
    "comparison_document",
    "findings",
    "gate_values",
    "read_audit",
]
