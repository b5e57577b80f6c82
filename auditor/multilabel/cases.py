"""Which images of a multi-label evaluation to explain, and for which labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.explain.store import Case
from auditor.manifest import LABEL_SEPARATOR, NO_LABEL
from auditor.select import Selection

__all__ = ["label_cases", "labels_of", "select_label_cases"]


def labels_of(text: str) -> list[str]:
    """The labels of a predictions table's ``label`` or ``prediction`` cell."""
    return [] if text == NO_LABEL else text.split(LABEL_SEPARATOR)


def select_label_cases(
    predictions: pd.DataFrame, classes: tuple[str, ...], limit: int, seed: int
) -> Selection:
    """Up to ``limit`` sampled and up to ``limit`` misclassified images.

    The sample is seeded and spread over the labels: each label in turn (then the
    images with none) takes its next image not yet taken, so every label has images in
    the sample when it can. The misclassified images are those whose called set is not
    their labels, most wrong labels first (then by index).
    """
    rng = np.random.default_rng(seed)
    labelled = [labels_of(str(t)) for t in predictions["label"]]
    indices = predictions["index"].to_numpy()
    pools = [
        list(rng.permutation(indices[[name in have for have in labelled]])) for name in classes
    ]
    pools.append(list(rng.permutation(indices[[not have for have in labelled]])))
    taken: set[int] = set()
    while len(taken) < min(limit, len(indices)) and any(pools):
        for pool in pools:
            while pool and int(pool[0]) in taken:
                pool.pop(0)
            if pool and len(taken) < limit:
                taken.add(int(pool.pop(0)))
    errors = predictions.loc[~predictions["correct"]].sort_values(
        ["errors", "index"], ascending=[False, True], kind="stable"
    )
    return Selection(
        sampled=tuple(sorted(taken)),
        misclassified=tuple(int(i) for i in errors["index"].head(limit)),
        n_errors=len(errors),
    )


def label_cases(
    selection: Selection, predictions: pd.DataFrame, classes: tuple[str, ...]
) -> list[Case]:
    """One case per selected image and label to explain: every label it is called
    positive for (role ``predicted:<label>``) and, for a misclassified image, every label
    it has but was not called for (``missed:<label>``)."""
    rows = predictions.set_index("index")
    cases = []
    for group, index in selection.images():
        called = labels_of(str(rows.at[index, "prediction"]))
        missed = [n for n in labels_of(str(rows.at[index, "label"])) if n not in called]
        cases += [Case(index, group, f"predicted:{n}", classes.index(n)) for n in called]
        cases += [Case(index, group, f"missed:{n}", classes.index(n)) for n in missed]
    return cases
