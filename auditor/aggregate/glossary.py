"""The glossary: each term the report uses, with the one meaning it has throughout.

"Sensitivity" is only ever the clinical true-positive rate: the stability of a map
under small input noise is *map instability*. Curve areas are named by their curve
(area under the ROC curve, area under the deletion curve). ``tests/test_glossary.py``
reads the demo report and fails when a term is used in another sense.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs

__all__ = ["GLOSSARY", "GlossaryView", "Term", "glossary_view"]


@dataclass(frozen=True)
class Term:
    """One term and its meaning in this report."""

    term: str
    meaning: str


GLOSSARY: tuple[Term, ...] = (
    Term("Accuracy", "The share of images whose predicted class (the most probable) is the "
         "true class."),
    Term("Balanced accuracy", "The mean over classes of each class's sensitivity, so that a "
         "frequent class does not dominate."),
    Term("Sensitivity", "Of the images whose true class is the positive class (or a given "
         "class), the share the model calls that class: the true-positive rate, or recall. "
         "This report uses the word in no other sense."),
    Term("Specificity", "Of the images whose true class is not the positive class, the share "
         "the model does not call positive: the true-negative rate."),
    Term("PPV and NPV", "Positive and negative predictive value: of the images called "
         "positive (negative), the share that are. They depend on the prevalence."),
    Term("Prevalence", "The share of images whose true class is the positive class."),
    Term("Operating threshold", "The probability of the positive class at or above which an "
         "image is called positive; declared, or chosen on the data for a target "
         "sensitivity or specificity."),
    Term("ROC curve; area under the ROC curve (ROC AUC)", "Sensitivity against the "
         "false-positive rate (1 − specificity) over every threshold; its area is the chance "
         "that a random positive image scores above a random negative one. Macro ROC AUC "
         "averages each class's one-vs-rest area."),
    Term("Precision-recall curve; average precision", "PPV against sensitivity over every "
         "threshold; average precision summarises its area."),
    Term("Decision curve; net benefit", "The benefit of acting on the model's calls at a "
         "threshold probability, in true positives per image net of weighted false "
         "positives, compared with treating everyone or no one."),
    Term("Expected calibration error (ECE)", "The image-weighted mean gap between confidence "
         "and accuracy over equal-width confidence bins."),
    Term("Brier score", "The mean squared difference between the probability of the "
         "positive class and the outcome (0 or 1)."),
    Term("Calibration slope", "The slope of a logistic fit of the outcome on the log-odds of "
         "the predicted probability: 1 when calibrated, below 1 when over-confident."),
    Term("95% CI", "A 95% confidence interval: a bootstrap percentile interval (resampling "
         "images, or patients when a patient column is declared), a Wilson interval for a "
         "rate, or a Newcombe interval for a difference of two rates."),
    Term("Holm's adjustment", "A correction of p-values for testing several columns at once, "
         "bounding the chance of any false finding (family-wise error) at the level set."),
    Term("Step-down min-P", "Westfall and Young's correction of permutation p-values for "
         "testing many comparisons at once: each p-value is compared with the smallest over "
         "the comparisons not yet rejected in every permutation, bounding the chance of any "
         "false finding at the level set."),
    Term("Bonferroni's adjustment", "Multiplying p-values by the number of families tested "
         "(at most 1): a multi-label model's labels, each adjusted within by step-down min-P; "
         "the chance of any false finding stays at the level set whatever the labels share."),
    Term("Subgroup", "The images sharing one value of a metadata column (or of a declared "
         "intersection of two columns); numeric columns are cut into quartiles."),
    Term("Metadata dependence", "At the same true class, the share of images called "
         "positive changes with a metadata value: the value, not only the image's content, "
         "moves the decision."),
    Term("Equalized-odds difference", "The largest gap between subgroups in sensitivity or in "
         "false-positive rate (fairlearn's definition); equal-opportunity difference uses "
         "sensitivity only, demographic-parity difference the share called positive."),
    Term("Confident error", "A wrong call made with a confidence at or above the "
         "high-confidence setting."),
    Term("Fragile", "Said of a perturbation (noise, blur, …) whose severity lowers accuracy, "
         "sensitivity or specificity (a multi-label model's subset accuracy, or a label's "
         "sensitivity or specificity) by at least the fragile-drop setting, with the 95% CI "
         "of the change below 0 and enough images turned wrong."),
    Term("Attribution map", "A map of how much each pixel contributed to the score of one "
         "class, by one explanation method (saliency, Grad-CAM, LIME, …)."),
    Term("Randomisation check", "A method's maps for the trained model are compared with its "
         "maps for the model with its weights randomised (Adebayo et al., 2018); a method "
         "whose maps do not change shows the image more than what the model learned."),
    Term("Deletion and insertion curves; area under the deletion curve", "The probability of "
         "the explained class as the pixels a map ranks first are removed from the image "
         "(deletion, set to black) or put back into the blurred image (insertion); a faithful "
         "map makes the deletion curve fall fast, so its area is small."),
    Term("Faithfulness gain", "The area under the insertion curve minus the area under the "
         "deletion curve, less the same difference for a random pixel order, averaged over "
         "the explained images with its 95% CI: above 0 when the map beats chance."),
    Term("Map instability", "The largest relative change of a map under small uniform noise "
         "on the input (Yeh et al., 2019); a method above the instability threshold is "
         "called unstable."),
    Term("Pointing game; energy in the mask", "Whether a map's peak falls inside the region "
         "of interest (the mask), and the share of the map's positive evidence inside it."),
    Term("Shortcut", "Evidence concentrated outside the region of interest, in one part of "
         "the image, for a class or error type: the model may rely on an artefact (a marker, "
         "a ruler, a border)."),
    Term("Readable; weak evidence; do not read", "The trust verdicts: a readable method "
         "passes the randomisation check and ranks pixels better than a random order on this "
         "model (its stability and localisation are reported beside it, and an unstable "
         "one is said to be); weak evidence passes randomisation but does not beat a random "
         "order; do not read fails the randomisation check."),
    Term("SHA-256", "A fingerprint of a file's bytes: any change to the file changes it."),
)  # fmt: skip
"""Every term, in the order a reader meets them."""


@dataclass(frozen=True)
class GlossaryView:
    """The glossary appendix."""

    terms: tuple[Term, ...]


def glossary_view(inputs: AuditInputs) -> GlossaryView:
    """Every term of :data:`GLOSSARY` (the same for every audit)."""
    del inputs
    return GlossaryView(GLOSSARY)
