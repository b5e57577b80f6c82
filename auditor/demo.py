"""``auditor demo``: audit the bundled sample model on its synthetic validation set.

The validation split is written once to a cache folder (``$AUDITOR_CACHE_DIR``, else
``$XDG_CACHE_HOME/auditor``, else ``~/.cache/auditor``) as PNG files with a CSV manifest,
masks and metadata, and audited exactly as a user's data would be.
"""

from __future__ import annotations

import os
from pathlib import Path

from auditor.config import resolve_config
from auditor.pipeline import run_audit
from auditor.resources import resource_path
from auditor.synthetic import write_dataset

__all__ = ["DEMO_IMAGES", "cache_dir", "run_demo"]

DEMO_IMAGES = 400
DEMO_SEED = 0
DEMO_EXPLAIN_SAMPLES = 16  # every method on 16 errors and 16 samples: about a minute on 2 cores


def cache_dir() -> Path:
    """Where the demo data is written."""
    if "AUDITOR_CACHE_DIR" in os.environ:
        return Path(os.environ["AUDITOR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "auditor"


def run_demo(out: Path, device: str = "auto") -> Path:
    """Write (or reuse) the demo validation set and audit the sample model on it.

    Returns:
        The run folder.
    """
    manifest = write_dataset(cache_dir() / "demo-val", "val", DEMO_IMAGES, DEMO_SEED)
    model = resource_path("sample_models", "sample_cnn.pt")
    flags = {
        "model": model,
        "data": manifest,
        "out": out,
        "device": device,
        "explain_samples": DEMO_EXPLAIN_SAMPLES,
    }
    config = resolve_config(None, flags)
    return run_audit(config, command=f"auditor demo --out {out} --device {device}")
