"""Whether a metadata-dependence finding and a shortcut finding point to the same thing.

When the trust stage flags a shortcut (evidence concentrated in one region outside the
region of interest) and the predictions depend on a metadata column, the two may be one
flaw seen twice: a marker drawn in a corner, recorded in the metadata. For each
dependence finding, each explained image's share of positive evidence in the flagged
region (mean over the trusted methods, from the maps in ``explanations.npz``) is
compared between the column's two values of the finding: linked when the high value's
mean share is at least :data:`LINKED_RATIO` times the low value's with a one-sided
Mann-Whitney p-value (scipy) at most :data:`LINKED_ALPHA`; too few to judge when either
value has fewer than ``shortcut-min-images`` explained images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu

from auditor.clinical.dependence import Dependence
from auditor.clinical.groups import Grouping
from auditor.explain.engine import Explanations
from auditor.measure import Trust
from auditor.measure.shortcuts import region_share

__all__ = ["LINKED_ALPHA", "LINKED_RATIO", "ShortcutLink", "shortcut_links"]

LINKED_RATIO = 1.5
"""How many times more evidence in the shortcut's region the images of the dependence's
high value must hold than those of its low value for the two findings to be linked."""
LINKED_ALPHA = 0.05
"""...and a one-sided Mann-Whitney p-value of the per-image shares at most this."""


@dataclass(frozen=True)
class ShortcutLink:
    """One dependence finding compared with the flagged shortcut's region.

    Attributes:
        column: The metadata column of the dependence finding.
        region: The flagged shortcut's region (the most concentrated flagged group's).
        high, low: The column's values of the finding (highest and lowest positive rate).
        high_share, low_share: Mean share of evidence in ``region`` over the explained
            images of each value (NaN when too few).
        n_high, n_low: Explained images of each value with positive evidence.
        p_value: One-sided Mann-Whitney p-value (NaN when too few).
        linked: Whether the shortcut follows the column.
        too_few: Either value has fewer than ``min_images`` explained images.
    """

    column: str
    region: str
    high: str
    low: str
    high_share: float
    low_share: float
    n_high: int
    n_low: int
    p_value: float
    linked: bool
    too_few: bool
    min_images: int


def shortcut_links(
    dependence: Dependence | None,
    trust: Trust,
    explanations: Explanations,
    predictions_index: list[int],
    grouping: Grouping,
) -> tuple[ShortcutLink, ...]:
    """A link per column the prediction depends on when a shortcut is flagged (else
    none), between the values of the column's largest finding.

    Args:
        predictions_index: ``predictions.csv``'s ``index`` column, aligned with
            ``grouping``'s series.
    """
    shortcuts = trust.shortcuts
    if dependence is None or shortcuts is None or not shortcuts.flagged:
        return ()
    region = max(shortcuts.flagged, key=lambda g: g.concentration).region
    cases = [c for c in explanations.cases if c.role == "predicted"]
    shares = region_share(cases, explanations.maps, shortcuts.methods, region)
    links = []
    for finding, *_ in dependence.found_columns().values():
        assert finding.high is not None and finding.low is not None
        by_index = dict(zip(predictions_index, grouping.groups[finding.column], strict=True))
        high = [v for i, v in shares.items() if by_index.get(i) == finding.high]
        low = [v for i, v in shares.items() if by_index.get(i) == finding.low]
        too_few = min(len(high), len(low)) < shortcuts.min_images
        nan = float("nan")
        high_share, low_share = (
            (nan, nan) if too_few else (float(np.mean(high)), float(np.mean(low)))
        )
        p = nan if too_few else float(mannwhitneyu(high, low, alternative="greater").pvalue)
        linked = not too_few and high_share >= LINKED_RATIO * low_share and p <= LINKED_ALPHA
        links.append(
            ShortcutLink(
                finding.column,
                region,
                finding.high,
                finding.low,
                high_share,
                low_share,
                len(high),
                len(low),
                p,
                linked,
                too_few,
                shortcuts.min_images,
            )
        )
    return tuple(links)
