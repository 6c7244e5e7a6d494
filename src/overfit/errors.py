"""The one exception type for bad user input.

Every check that can reject what a user typed raises :class:`ConfigError`, so the
CLI can print it as a single line and exit before any MLflow run exists.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input: names the offending key, says what is wrong and what is allowed."""

    def __init__(self, key: str, problem: str, allowed: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.allowed = allowed
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.key}: {self.problem}"
        return f"{text} (allowed: {self.allowed})" if self.allowed else text
