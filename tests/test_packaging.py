"""The wheel carries the templates and the sample model, and finds them outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_finds_its_templates_and_sample_model(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path / "dist")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("auditor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "auditor/templates/report.html.j2",
        "auditor/templates/report.css",
        "auditor/templates/sections/summary.html.j2",
        "auditor/templates/sections/_cases.html.j2",
        "auditor/sample_models/sample_cnn.pt",
        "auditor/taps/model.py",
        "auditor/explain/score_cam.py",
        "auditor/schemas/metrics.schema.json",
        "auditor/schemas/manifest.schema.json",
    } <= names
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import auditor.resources as r;"
        "print(r.resource_path('templates', 'report.html.j2'));"
        "print(r.resource_path('sample_models', 'sample_cnn.pt'));"
        "print(r.resource_path('schemas', 'metrics.schema.json'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    ).stdout.split()
    assert all(Path(p).is_relative_to(target) and Path(p).is_file() for p in found), found
