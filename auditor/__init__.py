"""Auditor: audit a TorchScript image classifier into an HTML and PDF report."""

__version__ = "0.1.0"
