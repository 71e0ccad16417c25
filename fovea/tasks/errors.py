"""The task library's error type, in a module of its own so torch-free code (the catalog,
the dataset format parsers, the API) can raise and catch it without importing torch."""

from __future__ import annotations


class UserError(Exception):
    """Bad data or bad configuration: the job fails at once and is never retried."""
