"""The periodic audits' settings: one declaration each (see :mod:`auditor.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.settings import inherited, setting

__all__ = ["PeriodicSettings"]


def _alpha(value: float) -> str | None:
    return None if 0 < value < 0.5 else f"must be between 0 and 0.5, got {value:g}"


@dataclass(frozen=True)
class PeriodicSettings:
    """Where the history of runs is kept, what the model is called in it, and how two
    audits are compared.

    Set in the config file (flat or in its ``[periodic]`` table). ``seed`` is the run's.
    """

    history: str | None = setting(
        None,
        help="The history of runs: a SQLite file path, or any SQLAlchemy URL (such as "
        "postgresql://host/audits) so several machines share one; '-' keeps no history",
        flag=True,
        default_text="<out>/history.sqlite",
    )
    model_name: str | None = setting(
        None,
        help="The model's name in the history: runs of one name are compared with the previous one",
        flag=True,
        default_text="the model file's stem",
    )
    model_version: str = setting(
        "", help="The model's version, recorded in the history and the report", flag=True
    )
    compare_alpha: float = setting(
        0.05,
        help="Significance level of the comparison with the previous audit (McNemar's test, "
        "the drift tests)",
        check=_alpha,
    )
    drift_permutations: int = setting(
        199,
        help="Permutations for the p-value of the embedding's maximum mean discrepancy",
        minimum=19,
    )
    drift_points: int = setting(
        1000,
        help="Most images of each audit the embedding's drift test uses (a seeded sample)",
        unit="images",
        minimum=20,
    )
    seed: int = inherited("seed", 0)
