"""From per-image trust records to one verdict per method (pandas).

Each registered check (:data:`auditor.measure.registry.CHECKS`) summarises its records
into its columns and its judgement (its class states the criterion, and the report
states it with its setting); the verdict sentence weighs the judgements.

Each verdict sentence is decided together with its :class:`VerdictLevel` (``bad``:
fails randomisation; ``good``: can be read; ``weak`` otherwise), so no reader has to
parse the wording.
"""

from __future__ import annotations

from enum import StrEnum

import pandas as pd

from auditor.measure.check import NOT_MEASURED, Check, Evidence
from auditor.measure.registry import CHECKS

__all__ = [
    "PROTOCOL_COLUMNS",
    "VERDICT_COLUMNS",
    "VerdictLevel",
    "verdict_columns",
    "verdict_table",
]


class VerdictLevel(StrEnum):
    """How far a method's maps can be read for this model (the row's colour in the report).

    Attributes:
        GOOD: "Can be read for this model".
        WEAK: Weak evidence or not checked.
        BAD: Fails the randomisation check: do not read its maps.
    """

    GOOD = "good"
    WEAK = "weak"
    BAD = "bad"


def verdict_columns(checks: tuple[Check, ...] = CHECKS) -> dict[str, str]:
    """The verdict table's columns and dtypes: the method, each check's, the verdict."""
    columns = {"method": "string"}
    for check in checks:
        columns.update(check.columns)
    return columns | {"verdict": "string", "level": "string"}


PROTOCOL_COLUMNS = {
    "protocol_images": "int64",
    "protocol_steps": "int64",
    "protocol_copies": "int64",
}
"""Each method's protocol for the randomisation and stability checks (see
:mod:`auditor.measure.budget`): images, cascade steps, noisy copies."""

VERDICT_COLUMNS: dict[str, str] = verdict_columns() | PROTOCOL_COLUMNS
"""``trust.csv``'s columns and dtypes, in order: the verdict table's, then the protocol's."""


def _verdict(row: dict[str, object], threshold: float) -> tuple[str, VerdictLevel]:
    """The verdict sentence and its level, decided together."""
    if row["randomisation"] == "fails":
        return (
            "Do not read its maps for this model: with every weight randomised they still "
            f"rank pixels as for the trained model (rank correlation "
            f"{row['randomisation_spearman']:.2f} ≥ {threshold:g}), so they show the image "
            "more than what the model learned.",
            VerdictLevel.BAD,
        )
    if row["faithfulness"] in ("worse than random", "not distinguishable from random"):
        return (
            "Weak evidence: removing the pixels it ranks highest lowers the class "
            f"probability no faster than a random order ({row['faithfulness']}).",
            VerdictLevel.WEAK,
        )
    if row["faithfulness"] == NOT_MEASURED and row["randomisation"] == NOT_MEASURED:
        return (
            "Not checked: neither randomisation nor faithfulness was measured.",
            VerdictLevel.WEAK,
        )
    text = "Can be read for this model"
    reasons = []
    if row["randomisation"] == "passes":
        reasons.append("depends on the learned weights")
    if row["faithfulness"] == "better than random":
        reasons.append("ranks pixels better than random")
    if reasons:
        text += ": it " + " and ".join(reasons)
    if row["stability"] == "unstable":
        text += f"; but small noise moves its map by {row['map_instability']:.0%}"
    if row["localisation"] == "misses":
        text += "; its evidence lies mostly outside the region of interest (see shortcuts)"
    return text + ".", VerdictLevel.GOOD


def verdict_table(
    records: pd.DataFrame,
    methods: tuple[str, ...],
    last_step: str | None,
    randomisation_threshold: float,
    instability_threshold: float,
    seed: int = 0,
    checks: tuple[Check, ...] = CHECKS,
) -> pd.DataFrame:
    """One row per method with every measurement, the verdict and its level.

    Columns: :data:`VERDICT_COLUMNS`; ``level`` is a :class:`VerdictLevel` value.

    Args:
        records: Trust records (``index, role, method, measure, step, value, ...``).
        methods: Method keys, in report order.
        last_step: Label of the cascade's last step (the whole model randomised), or
            ``None`` if randomisation was not measured.
        randomisation_threshold: Rank correlation at or above which a method fails.
        instability_threshold: Map instability above which a method is unstable.
        seed: Seed of the bootstrap intervals.
        checks: The checks that summarise the records (default: every registered one).
    """
    evidence = Evidence(
        records[records["status"] == "ok"],
        last_step,
        randomisation_threshold,
        instability_threshold,
        seed,
    )
    rows = []
    for method in methods:
        row: dict[str, object] = {"method": method}
        for check in checks:
            row.update(check.summarise(evidence, method))
        verdict, level = _verdict(row, randomisation_threshold)
        row["verdict"], row["level"] = verdict, level.value
        rows.append(row)
    columns = verdict_columns(checks)
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)
