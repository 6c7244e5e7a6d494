"""What one command asks of its sweep and what came of it, within its process.

The CLI and the pipeline runner call the Hydra app; Hydra calls the task, the sweeper and
the callbacks. A :class:`Session` carries what the caller asked (nest the sweep under a
pipeline run, a name, a progress label, a SCHEDULED parent to reopen) in, and the outcome
(the sweep's parent and points, or the single run's result) out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from overfit.tracking.pointfile import PointResult
    from overfit.tracking.store import Store
    from overfit.tracking.sweeps import Outcome


class Stopped(BaseException):
    """An exception raised inside Hydra's run (a job's, the sweeper's), carried past Hydra's catch-all, which
    would print it with a traceback and exit 1, to the CLI, which says it in one line with its own exit code."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Session:
    """One command's sweep or run: the request, then the parent as soon as it exists, then the outcome."""

    nest_under: str | None = None
    name: str | None = None
    label: str = ""
    scheduled: str | None = None  # a SCHEDULED parent (``--detach``) that this driver job reopens
    store: Store | None = None
    uri: str = ""
    parent: str | None = None
    outcome: Outcome | None = None
    result: PointResult | None = None


_current: list[Session] = []


def begin(session: Session) -> Session:
    _current.append(session)
    return session


def end(session: Session) -> None:
    if session in _current:
        _current.remove(session)


def current() -> Session:
    """The command's session (a default one when Hydra runs the app without the CLI, as a plain app)."""
    if not _current:
        _current.append(Session())
    return _current[-1]
