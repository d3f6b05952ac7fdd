"""Fixtures of the response tests (defined in :mod:`response_lab`)."""

from response_lab import alertmanager_factory, lab  # noqa: F401
