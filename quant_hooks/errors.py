"""Errors caused by a user's settings, which command-line tools print without a traceback."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config file is missing, or a setting it names does not exist or is invalid."""
