"""Aggregate stage: turn the stages' outputs into the views the report shows.

compute → describe → render: the stages compute; this package describes their outputs
as views (tables, figures as PNG data URIs, sentences, verdict levels), one module per
report section, registered in :mod:`.sections`; :mod:`auditor.report` only renders
them. The report never sees the model.
"""

from auditor.aggregate.inputs import AuditInputs
from auditor.aggregate.report import ReportData, TitlePage, build_report_data
from auditor.aggregate.sections import SECTIONS, PresentSection, Section, present_sections
from auditor.aggregate.subgroups import SubgroupRow, subgroup_table, wilson_interval

__all__ = [
    "SECTIONS",
    "AuditInputs",
    "PresentSection",
    "ReportData",
    "Section",
    "SubgroupRow",
    "TitlePage",
    "build_report_data",
    "present_sections",
    "subgroup_table",
    "wilson_interval",
]
