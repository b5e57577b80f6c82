"""The similarity stage's settings: one declaration each (see :mod:`auditor.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditor.settings import inherited, setting

__all__ = ["SimilaritySettings"]


def _perplexity(value: float) -> str | None:
    return None if 2 <= value <= 100 else f"must be between 2 and 100, got {value:g}"


@dataclass(frozen=True)
class SimilaritySettings:
    """Where the embedding is read, how it is projected and what counts as a duplicate.

    Set in the config file (flat or in its ``[similarity]`` table). ``batch_size``,
    ``workers``, ``seed`` and ``patient_column`` are the run's.
    """

    embedding_layer: str | None = setting(
        None,
        help="The module whose output is the embedding (a 4-D output is averaged over space, "
        "a sequence of tokens gives its first, the class token)",
        flag=True,
        default_text="the input of the last linear layer",
    )
    tsne_points: int = setting(
        2000,
        help="Most images t-SNE places (a seeded sample stratified by class, or set of labels, "
        "when there are more); 0 skips t-SNE",
        unit="images",
        minimum=0,
    )
    tsne_perplexity: float = setting(
        30.0,
        help="t-SNE's perplexity (scikit-learn's TSNE), lowered to a third of the points "
        "when there are fewer than 3 × perplexity",
        check=_perplexity,
    )
    agreement_neighbours: int = setting(
        10,
        help="Nearest neighbours (cosine) each image's value is compared with when measuring "
        "how much a variable organises the embedding",
        minimum=1,
        maximum=100,
    )
    agreement_permutations: int = setting(
        999,
        help="Permutations of a variable's values (within each class, or set of labels) for the "
        "p-value of its neighbour agreement",
        minimum=19,
    )
    neighbours: int = setting(
        5,
        help="Nearest validation images (cosine) shown beside each explained case",
        minimum=1,
        maximum=20,
    )
    duplicate_distance: float = setting(
        0.02,
        help="Two images are near-duplicates when the cosine distance of their embeddings (1 "
        "minus the cosine similarity) is at most this share of the median distance from an "
        "image to its nearest neighbour (byte-identical files always are)",
        unit="share",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
    )
    train_data: Path | None = setting(
        None,
        help="The training set (a folder or manifest, as --data): its embeddings only, no "
        "evaluation, to flag training images that nearly duplicate validation ones "
        "(possible leakage) and patients in both sets",
        flag=True,
        default_text="none",
    )
    batch_size: int = inherited("batch_size", 32)
    workers: int = inherited("workers", 0)
    seed: int = inherited("seed", 0)
    patient_column: str | None = inherited("patient_column", None)
