"""Signals as a run meets them: recorded, then honoured where it is safe.

SIGTERM (a scheduler, ``kill``, ``scancel``), SIGINT (Ctrl-C) and SLURM's warning
signals SIGUSR1/SIGUSR2 are recorded by :class:`Signals`. While a trainer runs, it
defers them to the end of the epoch (see :class:`overfit.training.resume.Resume`);
while a run is created and while the training libraries are imported they are held
(:meth:`Signals.held`) and honoured right after; elsewhere the signal raises
:class:`Interrupted` at once. No heavy import here:
the CLI catches :class:`Interrupted` without loading Lightning.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # SLURM's preemption / time-limit warnings


class Interrupted(BaseException):
    """A signal stopped the run (a BaseException: nothing on the way may swallow it).

    ``outcome`` says what became of the runs on the way out, for the one line the user reads.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.outcome = "nothing was left open"
        super().__init__(f"{signal.Signals(signum).name} (signal {signum})")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for Ctrl-C, 143 for SIGTERM: what a shell reports


class Signals:
    """Installed around one run: records the first signal; raises at once unless training defers it."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferred = False
        self.previous: dict[int, Any] = {}
        self.hooks: list[Callable[[Interrupted], None]] = []  # told at once of a deferred signal (stores stop waiting)

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self.previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """Record; raise now when nothing will act on it at a safe point (or on a second signal)."""
        first = self.received is None
        self.received = self.received or signum
        if not self.deferred or not first:
            raise Interrupted(self.received)
        for hook in self.hooks:
            hook(Interrupted(signum))

    @contextmanager
    def held(self, honour: bool = True) -> Iterator[None]:
        """Defer signals over a block that must not be cut; then honour one that came (or leave it to :meth:`check`).

        For imports (an exception raised mid-import leaves half-initialised modules
        behind, and every later import of them fails) and for creating a run (a run
        created but not yet handed back could not be closed).
        """
        before = self.deferred
        self.deferred = True
        try:
            yield
        finally:
            self.deferred = before
        if honour and not before:
            self.check()

    def check(self) -> None:
        """Raise :class:`Interrupted` for a signal that came while it was held."""
        if self.received is not None:
            raise Interrupted(self.received)

    def reinstall(self) -> None:
        """Take SIGTERM back from Lightning, whose own handler would stop training mid-epoch."""
        if self.previous and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.handle)
