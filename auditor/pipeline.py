"""The orchestrator: calls the stages in order and writes the run folder.

load ─► profile ─► evaluate ─► select ─► explain ─► measure ─► aggregate ─► render

Everything that can fail because of the user's input fails before anything is
written. The run folder is assembled under a hidden ``.partial`` name and renamed
into place only when every file is written, so a folder with the final name is
always complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from auditor import __version__
from auditor.aggregate import ReportData, build_report_data
from auditor.architecture import (
    ArchitectureProfile,
    layers_frame,
    profile_model,
)
from auditor.config import AuditConfig
from auditor.data import discover
from auditor.errors import ConfigError, DataError, OutputError
from auditor.evaluate import Evaluation, evaluate, probe_output_kind
from auditor.explain import METHODS, ExplainSettings
from auditor.explain.engine import Explanations, explain_cases
from auditor.explain.features import stage_layers
from auditor.explain.layers import choose_layer, is_token_shape
from auditor.explain.store import save_features, save_maps
from auditor.images import Preprocessing, expected_size
from auditor.load import LoadedModel, OutputKind, file_sha256, load_model, resolve_device
from auditor.measure import Trust, TrustSettings, measure_trust
from auditor.report.render import render_html, write_pdf
from auditor.select import select_cases

__all__ = ["METRICS_SCHEMA_VERSION", "run_audit"]

log = logging.getLogger(__name__)

METRICS_SCHEMA_VERSION = 2  # 2: the "trust" section
_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "scikit-learn",
    "scikit-image",
    "scipy",
    "captum",
    "matplotlib",
    "jinja2",
    "weasyprint",
)


def _now() -> datetime:
    return datetime.now(UTC)


def _versions() -> tuple[tuple[str, str], ...]:
    found = [("python", platform.python_version()), ("auditor", __version__)]
    for package in _PACKAGES:
        try:
            found.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            found.append((package, "not installed"))
    return tuple(found)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def explain_settings(config: AuditConfig) -> ExplainSettings:
    """The method settings of a config (every method when ``methods`` is not set).

    Each field of :class:`ExplainSettings` is the config field of the same name.
    """
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(ExplainSettings)}
    values["methods"] = config.methods if config.methods is not None else tuple(METHODS)
    return ExplainSettings(**values)


def trust_settings(config: AuditConfig) -> TrustSettings:
    """The trust-check settings of a config (each field is the config field of its name)."""
    return TrustSettings(
        **{f.name: getattr(config, f.name) for f in dataclasses.fields(TrustSettings)}
    )


def _target_layer(
    config: AuditConfig, profile: ArchitectureProfile, model: LoadedModel, kind: OutputKind
) -> str | None:
    if config.target_layer is None:
        generator = torch.Generator().manual_seed(config.seed)
        example = torch.rand(profile.input_shape, generator=generator)
        chosen = choose_layer(model, profile.layers, example, kind, config.token_prefix)
        return chosen.path if chosen else None
    layer = next((layer for layer in profile.layers if layer.path == config.target_layer), None)
    if layer is None or not (
        len(layer.output_shape) == 3 or is_token_shape(layer.output_shape, config.token_prefix)
    ):
        usable = [
            layer.path
            for layer in sorted(profile.layers, key=lambda layer: layer.order)
            if len(layer.output_shape) == 3 or is_token_shape(layer.output_shape)
        ][-5:]
        raise ConfigError(
            f"target-layer {config.target_layer!r} is not a module with a (C, H, W) or "
            f"(tokens, dim) output in this model; choose one of the later ones: "
            f"{', '.join(usable) or 'none'}"
        )
    return layer.path


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN becomes null, tuples become lists."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def trust_document(trust: Trust) -> dict[str, Any]:
    """The ``trust`` section of ``metrics.json``: verdicts, shortcut findings, settings."""
    shortcuts = trust.shortcuts
    return {
        "settings": asdict(trust.settings),
        "methods": trust.verdicts.astype(object).to_dict("records"),
        "randomisation_steps": [
            {"label": step.label, "share_of_modules": step.share} for step in trust.steps
        ],
        "not_measured": trust.not_measured,
        "agreement": {key: dict(row.items()) for key, row in trust.agreement.iterrows()},
        "shortcuts": None
        if shortcuts is None
        else {
            "methods": list(shortcuts.methods),
            "groups": [
                {
                    "kind": g.kind,
                    "name": g.name,
                    "n": g.n,
                    "outside_roi": g.outside[0],
                    "outside_roi_ci": [g.outside[1], g.outside[2]],
                    "outside_area": g.outside_area,
                    "region": g.region,
                    "region_share": g.region_share,
                    "region_area": g.region_area,
                    "flagged": g.flagged,
                    "finding": g.sentence() if g.flagged else None,
                }
                for g in shortcuts.groups
            ],
        },
    }


def metrics_document(
    evaluation: Evaluation, classes: tuple[str, ...], trust: Trust
) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    m = evaluation.metrics
    per_class = []
    for c in m.per_class:
        row = asdict(c)
        row["class"] = row.pop("name")
        per_class.append(row)
    return _clean(
        {
            "schema_version": METRICS_SCHEMA_VERSION,
            "n_images": m.n_images,
            "n_excluded": len(evaluation.excluded),
            "classes": list(classes),
            "output_kind": evaluation.output_kind.name.lower(),
            "accuracy": asdict(m.accuracy),
            "balanced_accuracy": asdict(m.balanced_accuracy),
            "macro_auc": m.macro_auc,
            "ece": m.ece,
            "per_class": per_class,
            "confusion_matrix": m.confusion_matrix,
            "calibration": [asdict(b) for b in m.calibration],
            "trust": trust_document(trust),
        }
    )


def _run_folder(out: Path, stem: str, started: datetime) -> Path:
    base = f"{stem}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    candidate, n = out / base, 1
    while candidate.exists() or (out / f".{candidate.name}.partial").exists():
        n += 1
        candidate = out / f"{base}-{n}"
    return candidate


def _write_run(
    folder: Path,
    report: ReportData,
    evaluation: Evaluation,
    profile: ArchitectureProfile,
    explanations: Explanations,
    trust: Trust,
    classes: tuple[str, ...],
    started: datetime,
    finished: datetime,
) -> None:
    """Write every file into ``folder`` (which exists and is empty); manifest.json last."""
    evaluation.predictions.to_csv(folder / "predictions.csv", index=False)
    layers_frame(profile).to_csv(folder / "layers.csv", index=False)
    evaluation.excluded.to_csv(folder / "excluded.csv", index=False)
    (folder / "metrics.json").write_text(
        json.dumps(metrics_document(evaluation, classes, trust), indent=2, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    save_maps(explanations, folder / "explanations.npz")
    save_features(explanations, folder / "features.npz")
    explanations.records.to_csv(folder / "explanations.csv", index=False)
    trust.verdicts.to_csv(folder / "trust.csv", index=False)
    trust.records.to_csv(folder / "trust_records.csv", index=False)
    html = render_html(report)
    (folder / "report.html").write_text(html, encoding="utf-8")
    write_pdf(html, folder, folder / "report.pdf")
    files = {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}
    manifest = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "auditor_version": __version__,
        "model": {"path": str(report.config.model), "sha256": report.model_sha256},
        "data": {"source": str(report.dataset.source), "sha256": report.data_sha256},
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def run_audit(config: AuditConfig, command: str | None = None) -> Path:
    """Run every stage and write the run folder.

    Args:
        config: The resolved configuration.
        command: The command line to record in the report (default: ``sys.argv``).

    Returns:
        The run folder ``<out>/<model stem>-<UTC timestamp>/``.

    Raises:
        AuditError: A problem with the model, data or configuration (nothing written).
    """
    started = _now()
    device = resolve_device(config.device)
    model = load_model(config.model, device)
    dataset = discover(config.data, config.classes)
    for option, values in (("mean", config.mean), ("std", config.std)):
        if values is not None and len(values) not in (1, model.in_channels):
            raise ConfigError(
                f"--{option} has {len(values)} values but the model reads "
                f"{model.in_channels}-channel "
                f"images; give 1 or {model.in_channels} values"
            )
    preprocessing = Preprocessing(model.in_channels, config.image_size, config.mean, config.std)
    # Settle the input size once, so no later loader scans the headers again.
    size = expected_size(dataset.samples, preprocessing)
    preprocessing = dataclasses.replace(preprocessing, size=size)
    kind = probe_output_kind(model, dataset, preprocessing)
    if size is None:
        raise DataError(f"no image in {str(config.data)!r} can be opened; check the files")
    profile = profile_model(model, (model.in_channels, *size), config.batch_size, config.seed)
    layer = _target_layer(config, profile, model, kind)
    log.info("evaluating %d images on %s", len(dataset.samples), device)
    evaluation = evaluate(model, dataset, preprocessing, kind, config)
    selection = select_cases(
        evaluation.predictions, dataset.classes, config.explain_samples, config.seed
    )
    explanations = explain_cases(
        model,
        dataset,
        preprocessing,
        evaluation.predictions,
        selection,
        kind,
        layer,
        explain_settings(config),
        config.batch_size,
        stages=stage_layers(profile.layers),
    )
    trust = measure_trust(
        model,
        dataset,
        preprocessing,
        evaluation.predictions,
        explanations,
        kind,
        explain_settings(config),
        trust_settings(config),
        profile.layers,
        config.batch_size,
    )
    finished = _now()
    report = build_report_data(
        config=config,
        dataset=dataset,
        preprocessing=preprocessing,
        evaluation=evaluation,
        architecture=profile,
        explanations=explanations,
        trust=trust,
        sampled=selection.sampled,
        misclassified=selection.misclassified,
        n_errors=selection.n_errors,
        command=command if command is not None else " ".join(sys.argv),
        versions=_versions(),
        device_name=_device_name(device),
        started=started.strftime("%Y-%m-%d %H:%M:%S"),
        finished=finished.strftime("%Y-%m-%d %H:%M:%S"),
        auditor_version=__version__,
    )
    try:
        config.out.mkdir(parents=True, exist_ok=True)
        folder = _run_folder(config.out, config.model.stem, started)
        partial = config.out / f".{folder.name}.partial"
        partial.mkdir()
    except OSError as error:
        raise OutputError(
            f"cannot create a run folder in {str(config.out)!r} ({error.strerror or error}); "
            f"pass --out with a writable folder"
        ) from None
    try:
        _write_run(
            partial,
            report,
            evaluation,
            profile,
            explanations,
            trust,
            dataset.classes,
            started,
            finished,
        )
        os.replace(partial, folder)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise OutputError(
            f"writing the run folder in {str(config.out)!r} failed ({error.strerror or error}); "
            f"nothing was kept; check free space and permissions, then run again"
        ) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder
