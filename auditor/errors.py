"""The errors Auditor raises for problems a user can fix.

Every user mistake is an :class:`AuditError` whose message names the value, what was
expected and what to do next. The CLI prints ``Error: <message>`` and exits with
:attr:`AuditError.exit_code`; no traceback is shown for these.
"""

from __future__ import annotations


class AuditError(Exception):
    """A problem with the user's input, model or environment, worded for the user."""

    exit_code = 1


class ModelError(AuditError):
    """The model file cannot be loaded or does not fit the data."""


class DataError(AuditError):
    """The validation data cannot be read or is inconsistent."""


class ConfigError(AuditError):
    """The configuration file or an option has an invalid value."""


class UsageError(ConfigError):
    """A required option is missing: the command was called the wrong way (exit code 2)."""

    exit_code = 2


class OutputError(AuditError):
    """The run folder cannot be written."""
