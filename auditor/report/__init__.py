"""Render stage: the report as HTML (Jinja2) and PDF (WeasyPrint), and its figures."""
