"""``overfit``: the command line. Thin: each command hands over to its module.

Heavy libraries (Lightning, torchvision, MLflow) are imported only by the
commands that need them, so ``overfit --help`` answers at once. Every failure a
user can cause or meet is one line: bad input exits 2 before anything runs, a
store that cannot be used or a run that failed exits 1, a signal exits 128 + its
number after the runs are closed.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Callable

from overfit.errors import ConfigError

USAGE = """usage: overfit COMMAND [ARGS]

commands:
  train [overrides]        train one configuration (Hydra overrides, e.g. dataset=digits model=mlp)
  train -m [sweep]         sweep: one MLflow parent run, one child per point (e.g. features.order=1,3,12)
  train -m [sweep] --detach [--begin TIME]
                           submit the sweep to SLURM and return; a driver job finishes it (report, status)
  sweep status|cancel RUN  a sweep's or pipeline's points from MLflow and SLURM; cancel its jobs, runs KILLED
  report RUN_ID            rebuild a sweep's summary table and generalization curves from the store
  runs reap                mark runs whose process or SLURM job is gone as KILLED
  pipeline run|show|list   declarative studies from pipelines/*.yaml
  gradcheck                analytic vs autograd vs finite-difference gradients
  ui                       print the command that opens the MLflow UI on this project's store

`overfit train --help` shows every config group, option and key.
"""


# Keys overfit sets for the jobs of a sweep: a user's value would mislead them about which sweep they are in.
PLUMBING = ("sweep.parent_run_id", "sweep.plan", "sweep.unit", "sweep.axes", "sweep.choices")


def _refuse_plumbing(args: list[str]) -> None:
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key in PLUMBING:
            raise ConfigError(key, "is set by overfit for the jobs of a sweep, never on the command line",
                              "leave it out; sweep.rerun, sweep.vectorize and sweep.max_points are yours")


def _train(args: list[str]) -> int:
    from overfit import app
    from overfit.cluster import detach as driver

    _refuse_plumbing(args)
    args, detach = _flag(args, "--detach", takes_value=False)
    args, begin = _flag(args, "--begin")
    args, scheduled = _flag(args, driver.FLAG_RUN)
    sweeping = "-m" in args or "--multirun" in args
    if (detach or begin) and not sweeping:
        raise ConfigError("--detach" if detach else "--begin", "schedules a sweep", "overfit train -m SWEEP --detach "
                          "[--begin TIME]")
    if detach:
        from overfit.sweeping.driver import detach as submit

        submit([a for a in args if a not in ("-m", "--multirun")], begin or None)
        return 0
    if begin:
        args = driver.slurm_args(args, begin, "--begin")
    return app.main(args, scheduled=scheduled or None)


def _flag(args: list[str], flag: str, takes_value: bool = True) -> tuple[list[str], str]:
    """``args`` without ``flag`` (``--flag VALUE``, ``--flag=VALUE``, or bare), and its value ("1" bare, "" absent)."""
    rest, value = [], ""
    items = iter(args)
    for arg in items:
        if arg == flag:
            value = next(items, "") if takes_value else "1"
            if not value:
                raise ConfigError(flag, "needs a value", f"{flag} VALUE")
        elif takes_value and arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, value


def _sweep(args: list[str]) -> int:
    from overfit.cluster import control

    return control.main(args)


def _gradcheck(args: list[str]) -> int:
    from overfit.maths import gradcheck

    return gradcheck.main(args)


def _report(args: list[str]) -> int:
    from overfit.tracking import report

    return report.main(args)


def _runs(args: list[str]) -> int:
    from overfit.tracking import reap

    return reap.main(args)


def _pipeline(args: list[str]) -> int:
    from overfit.pipeline import cli as pipeline_cli

    return pipeline_cli.main(args)


def _ui(args: list[str]) -> int:
    from overfit.tracking import ui

    return ui.main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": _train,
    "gradcheck": _gradcheck,
    "report": _report,
    "runs": _runs,
    "pipeline": _pipeline,
    "sweep": _sweep,
    "ui": _ui,
}


def _stop(signum: int, frame: object) -> None:
    from overfit.interrupts import Interrupted

    raise Interrupted(signum)


YOUNG_OBJECTS = 10_000  # the collector's first threshold (Python's: 700); see own_process()


def own_process() -> None:
    """What the command sets in its own process before importing anything heavy.

    - The collector looks at new objects every :data:`YOUNG_OBJECTS` allocations instead of 700. Importing
      torch, Lightning and MLflow allocates millions of objects that live as long as the process, and at
      Python's pace each wave of imports starts another full pass over all of them: about 10 passes, 1.1 s
      of a 12-point sweep and 1.7 s at 180 points. With this there is one pass. Cyclic garbage is still
      collected, a little later.
    - MLflow's usage telemetry is off unless ``MLFLOW_DISABLE_TELEMETRY`` says otherwise. It fetches a
      config from the network in a thread of every process that imports MLflow, and overfit makes no
      network calls of its own.
    """
    gc.set_threshold(YOUNG_OBJECTS)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def run() -> None:
    """The ``overfit`` command: :func:`main`, then an exit without the collector's last passes over everything
    torch, Lightning and MLflow allocated (1–2 s at the end of every command, for memory the system frees)."""
    own_process()
    code = main()
    gc.freeze()
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None  # before any run: one line, 143
    try:
        return _dispatch(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(argv[0])
    if command is None and os.environ.get("LOCAL_RANK", "0") != "0":
        # Another device's process of `overfit train trainer.devices=N`: Lightning starts it again from
        # this program with the arguments the Hydra app saw (the command's name is not among them).
        command, argv = COMMANDS["train"], ["train", *argv]
    if command is None:
        print(f"overfit: error: unknown command {argv[0]!r} (allowed: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        return command(argv[1:])
    except ConfigError as exc:
        print(f"overfit: error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        return _failed(exc)


def _failed(exc: BaseException) -> int:
    """Known endings as one line and an exit code; anything else is a bug and keeps its traceback."""
    from overfit.cluster.slurm import SlurmError
    from overfit.tracking.store import StoreError
    from overfit.errors import Diverged
    from overfit.interrupts import Interrupted

    if isinstance(exc, Interrupted):
        print(f"overfit: interrupted by {exc}; {exc.outcome}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        print("overfit: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    if isinstance(exc, (StoreError, SlurmError)):
        print(f"overfit: error: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, Diverged):
        print(f"overfit: the run diverged ({exc}); it is recorded FAILED with failure=diverged", file=sys.stderr)
        return 1
    if isinstance(exc, BrokenPipeError):  # `overfit sweep status ID | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's recipe: no error at exit's flush
        return 141
    raise exc
