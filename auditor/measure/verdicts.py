"""From per-image trust records to one verdict per method (pandas).

Criteria (each stated in the report with its setting):

* randomisation: *fails* when the mean rank correlation between the maps of the model
  and of its fully randomised copy is at least ``randomisation-threshold``;
* faithfulness: *better than random* when the 95% CI of the per-image gain over a
  random ranking (insertion AUC − deletion AUC, method minus random) lies above 0,
  *worse than random* when below, otherwise *not distinguishable*;
* stability: *unstable* when the mean max-sensitivity exceeds ``sensitivity-threshold``;
* localisation: *localises* when the 95% CI of the energy inside the mask minus the
  mask's share of the image lies above 0, *misses* when below, else *inconclusive*.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.measure.similarity import mean_ci

__all__ = ["VERDICT_COLUMNS", "verdict_table"]

VERDICT_COLUMNS: dict[str, str] = {
    "method": "string",
    "randomisation_spearman": "float64",
    "randomisation_spearman_low": "float64",
    "randomisation_spearman_high": "float64",
    "randomisation_ssim": "float64",
    "randomisation": "string",
    "deletion_auc": "float64",
    "insertion_auc": "float64",
    "random_deletion_auc": "float64",
    "random_insertion_auc": "float64",
    "faithfulness_gain": "float64",
    "faithfulness_gain_low": "float64",
    "faithfulness_gain_high": "float64",
    "faithfulness": "string",
    "max_sensitivity": "float64",
    "max_sensitivity_low": "float64",
    "max_sensitivity_high": "float64",
    "stability": "string",
    "pointing_game": "float64",
    "energy_in_mask": "float64",
    "energy_in_mask_low": "float64",
    "energy_in_mask_high": "float64",
    "mask_area": "float64",
    "top_iou": "float64",
    "localisation": "string",
    "gini": "float64",
    "verdict": "string",
}
"""``trust.csv``'s columns and dtypes, in order."""

NOT_MEASURED = "not measured"


def _values(records: pd.DataFrame, method: str, measure: str, step: str = "") -> pd.Series:
    chosen = records[
        (records["method"] == method) & (records["measure"] == measure) & (records["step"] == step)
    ]
    return chosen.set_index(["index", "role"])["value"]


def _judge(low: float, high: float, above: str, below: str, between: str) -> str:
    if np.isnan(low):
        return NOT_MEASURED
    return above if low > 0 else below if high < 0 else between


def _verdict(row: dict[str, object], threshold: float) -> str:
    if row["randomisation"] == "fails":
        return (
            "Do not read its maps for this model: with every weight randomised they still "
            f"rank pixels as for the trained model (rank correlation "
            f"{row['randomisation_spearman']:.2f} ≥ {threshold:g}), so they show the image "
            "more than what the model learned."
        )
    if row["faithfulness"] in ("worse than random", "not distinguishable from random"):
        return (
            "Weak evidence: removing the pixels it ranks highest lowers the class "
            f"probability no faster than a random order ({row['faithfulness']})."
        )
    if row["faithfulness"] == NOT_MEASURED and row["randomisation"] == NOT_MEASURED:
        return "Not checked: neither randomisation nor faithfulness was measured."
    text = "Can be read for this model"
    reasons = []
    if row["randomisation"] == "passes":
        reasons.append("depends on the learned weights")
    if row["faithfulness"] == "better than random":
        reasons.append("ranks pixels better than random")
    if reasons:
        text += ": it " + " and ".join(reasons)
    if row["stability"] == "unstable":
        text += f"; but small noise moves its map by {row['max_sensitivity']:.0%}"
    if row["localisation"] == "misses":
        text += "; its evidence lies mostly outside the region of interest (see shortcuts)"
    return text + "."


def verdict_table(
    records: pd.DataFrame,
    methods: tuple[str, ...],
    last_step: str | None,
    randomisation_threshold: float,
    sensitivity_threshold: float,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per method with every measurement and the verdict (:data:`VERDICT_COLUMNS`).

    Args:
        records: Trust records (``index, role, method, measure, step, value, ...``).
        methods: Method keys, in report order.
        last_step: Label of the cascade's last step (the whole model randomised), or
            ``None`` if randomisation was not measured.
        randomisation_threshold: Rank correlation at or above which a method fails.
        sensitivity_threshold: Max-sensitivity above which a method is unstable.
        seed: Seed of the bootstrap intervals.
    """
    ok = records[records["status"] == "ok"]
    rows = []
    mask_area = _values(ok, "mask", "mask_area")
    for method in methods:
        row: dict[str, object] = {"method": method}
        spearman = (
            mean_ci(_values(ok, method, "spearman", last_step).to_numpy(), seed)
            if last_step is not None
            else (np.nan,) * 3
        )
        row["randomisation_spearman"], row["randomisation_spearman_low"] = spearman[:2]
        row["randomisation_spearman_high"] = spearman[2]
        row["randomisation_ssim"] = (
            _values(ok, method, "ssim", last_step).mean() if last_step is not None else np.nan
        )
        row["randomisation"] = (
            NOT_MEASURED
            if np.isnan(spearman[0])
            else "fails"
            if spearman[0] >= randomisation_threshold
            else "passes"
        )
        deletion, insertion = (
            _values(ok, method, "deletion_auc"),
            _values(ok, method, "insertion_auc"),
        )
        random_deletion = _values(ok, "random", "deletion_auc")
        random_insertion = _values(ok, "random", "insertion_auc")
        gain = ((insertion - deletion) - (random_insertion - random_deletion)).dropna()
        row["deletion_auc"], row["insertion_auc"] = deletion.mean(), insertion.mean()
        row["random_deletion_auc"] = random_deletion.reindex(deletion.index).mean()
        row["random_insertion_auc"] = random_insertion.reindex(insertion.index).mean()
        faithful = mean_ci(gain.to_numpy(), seed)
        row["faithfulness_gain"], row["faithfulness_gain_low"] = faithful[:2]
        row["faithfulness_gain_high"] = faithful[2]
        row["faithfulness"] = _judge(
            faithful[1],
            faithful[2],
            "better than random",
            "worse than random",
            "not distinguishable from random",
        )
        sensitivity = mean_ci(_values(ok, method, "max_sensitivity").to_numpy(), seed)
        row["max_sensitivity"], row["max_sensitivity_low"] = sensitivity[:2]
        row["max_sensitivity_high"] = sensitivity[2]
        row["stability"] = (
            NOT_MEASURED
            if np.isnan(sensitivity[0])
            else "unstable"
            if sensitivity[0] > sensitivity_threshold
            else "stable"
        )
        energy = _values(ok, method, "energy")
        inside = mean_ci(energy.to_numpy(), seed)
        row["energy_in_mask"], row["energy_in_mask_low"], row["energy_in_mask_high"] = inside
        row["mask_area"] = mask_area.reindex(energy.index).mean()
        above_chance = mean_ci((energy - mask_area.reindex(energy.index)).to_numpy(), seed)
        row["localisation"] = _judge(
            above_chance[1], above_chance[2], "localises", "misses", "inconclusive"
        )
        row["pointing_game"] = _values(ok, method, "pointing_game").mean()
        row["top_iou"] = _values(ok, method, "top_iou").mean()
        row["gini"] = _values(ok, method, "gini").mean()
        row["verdict"] = _verdict(row, randomisation_threshold)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS)).astype(VERDICT_COLUMNS)
