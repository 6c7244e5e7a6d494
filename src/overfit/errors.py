"""The exceptions a user meets: bad input, and a run that diverged.

Every check that can reject what a user typed raises :class:`ConfigError`, so the
CLI can print it as a single line and exit before any MLflow run exists. Both live
here, free of heavy imports, so the CLI can tell them apart without loading Lightning.
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


class Diverged(FloatingPointError):
    """The training objective became non-finite, or grew a millionfold."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"training objective {value:.3g} at epoch {epoch}")
        self.value = value
        self.epoch = epoch


class Alone(Exception):
    """A component that cannot train batched with others: its message says why."""
