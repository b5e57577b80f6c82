"""What a run records about its software and hardware: package versions, the device."""

from __future__ import annotations

import platform
from importlib import metadata

import torch

from auditor import __version__

__all__ = ["PACKAGES", "device_name", "versions"]

PACKAGES = (
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
    "statsmodels",
    "fairlearn",
)
"""The packages whose versions the report records."""


def versions() -> tuple[tuple[str, str], ...]:
    """``(package, version)`` of Python, Auditor and :data:`PACKAGES`."""
    found = [("python", platform.python_version()), ("auditor", __version__)]
    for package in PACKAGES:
        try:
            found.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            found.append((package, "not installed"))
    return tuple(found)


def device_name(device: torch.device) -> str:
    """The device in words: ``cuda:0 (NVIDIA H200)``, ``cpu (x86_64, 2 threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
