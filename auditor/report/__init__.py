"""Render stage: the report's views as HTML (Jinja2) and PDF (WeasyPrint); nothing computed."""
