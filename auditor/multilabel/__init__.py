"""Multi-label models: each image has a set of labels, and the model one sigmoid score
per label.

A multi-label manifest lists an image's labels separated by ``;`` (``-`` for none; see
:mod:`auditor.manifest`). The model is evaluated label by label and on the whole set
(:mod:`~auditor.multilabel.metrics`), its images are explained for every label called or
missed (:mod:`~auditor.multilabel.cases`), its explanations' trust is measured and its
calls are tested for metadata dependence, its probabilities' calibration measured, its
wrong calls counted, its rates compared across metadata values and its operating point
read label by label (:mod:`~auditor.multilabel.dependence`,
:mod:`~auditor.multilabel.calibration`, :mod:`~auditor.multilabel.failures`,
:mod:`~auditor.multilabel.fairness`, :mod:`~auditor.multilabel.operating`), its embedding
analysed (:mod:`auditor.similarity`), its units dissected and its labels tested with
TCAV and maximised as a single-label model's classes (:mod:`auditor.concepts`), its
cases' counterfactuals flip one label's call a search, each wrong call of a misclassified
image (:mod:`auditor.counterfactual.labels`),
and it is compared with its previous audit (:mod:`auditor.compare`).
"""
