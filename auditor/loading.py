"""Load stage: the model, the data, how one meets the other, the profile and the layers
the later stages read, everything that can fail because of the user's input checked
before any stage runs."""

from __future__ import annotations

from auditor.architecture import profile_model
from auditor.clinical import positive_class
from auditor.clinical.groups import intersection_columns
from auditor.concepts.data import split_concepts
from auditor.config import AuditConfig
from auditor.data import discover
from auditor.evaluate import probe_output_kind
from auditor.explain.features import stage_layers
from auditor.explain.layers import target_layer
from auditor.images import model_preprocessing
from auditor.load import load_model, resolve_device
from auditor.multilabel.metrics import label_thresholds
from auditor.outputs import Loaded
from auditor.similarity.embeddings import embedding_site

__all__ = ["load_inputs"]


def load_inputs(config: AuditConfig) -> Loaded:
    """Load the model and data, settle the preprocessing, profile and pick the target layer."""
    device = resolve_device(config.device)
    model = load_model(config.model, device)
    dataset, concepts = split_concepts(
        discover(config.data, config.classes, config.labels.output), config.dissection
    )
    if dataset.multi_label:  # a wrong count fails before any stage
        label_thresholds(config.evaluation.label_thresholds, dataset.classes)
    else:
        positive_class(dataset.classes, config.clinical)  # so does a wrong name
    dataset.check_metadata_column(config.patient_column, "patient-column")
    for pair in config.clinical.intersections:
        for column in intersection_columns(pair):
            dataset.check_metadata_column(column, f"intersections {pair!r}: column")
    preprocessing = model_preprocessing(
        dataset, model.in_channels, config.image_size, config.mean, config.std, config.max_pixels
    )
    kind = probe_output_kind(model, dataset, preprocessing)
    height, width = preprocessing.size or (0, 0)  # settled by model_preprocessing
    profile = profile_model(
        model, (model.in_channels, height, width), config.batch_size, config.seed
    )
    layer = target_layer(model, profile, config.explain, kind, config.seed)
    # A fully convolutional classifier's last stage may be its class maps: skip those.
    wide = [s.path for s in stage_layers(profile.layers) if s.shape[0] > len(dataset.classes)]
    site = embedding_site(model, config.similarity.embedding_layer, wide[-1] if wide else None)
    train = config.similarity.train_data
    train_set = discover(train, dataset.classes) if train is not None else None
    return Loaded(
        device, model, dataset, preprocessing, kind, profile, layer, concepts, site, train_set
    )
