"""The one error type for bad configuration values.

Every validation in the package raises :class:`ConfigError` with a message that starts with the dotted name of
the offending field, so that a command-line front end can print it as one line and exit non-zero.
"""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or impossible. ``str(err)`` is one line."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


def require_positive(key: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(key, f"must be > 0, got {value!r}")


def require_non_negative(key: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(key, f"must be >= 0, got {value!r}")


def require_count(key: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(key, f"must be >= {minimum}, got {value!r}")


def require_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(key, f"unknown value {value!r} (choose from {', '.join(choices)})")
