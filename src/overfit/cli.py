"""``overfit``: the command line. Thin: each command hands over to its module.

Heavy libraries (Lightning, torchvision, MLflow) are imported only by the
commands that need them, so ``overfit --help`` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from overfit.errors import ConfigError

USAGE = """usage: overfit COMMAND [ARGS]

commands:
  train [overrides]        train one configuration (Hydra overrides, e.g. dataset=digits model=mlp)
  train -m [sweep]         sweep: one MLflow parent run, one child per point (e.g. features.order=1,3,12)
  report RUN_ID            rebuild a sweep's summary table and generalization curves from the store
  runs reap                mark runs left RUNNING by a dead process as KILLED
  pipeline run|show|list   declarative studies from pipelines/*.yaml
  gradcheck                analytic vs autograd vs finite-difference gradients
  ui                       print the command that opens the MLflow UI on this project's store

`overfit train --help` shows every config group and option.
"""

HYDRA_INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "--version", "--shell-completion", "-sc")


def _train(args: list[str]) -> int:
    from overfit import app, config
    from overfit.tracking import sweeps

    if any(a in HYDRA_INFO_FLAGS for a in args):  # --help, --cfg job, ...: Hydra answers
        sys.argv = ["overfit train", *args]
        app.main()
        return 0
    if "-m" in args or "--multirun" in args:
        sweeps.run_sweep(args)
        return sweeps.report_outcome()
    config.compose_jobs(args, multirun=False)
    sys.argv = ["overfit train", *args]
    app.main()
    return 0


def _gradcheck(args: list[str]) -> int:
    from overfit.maths import gradcheck

    return gradcheck.main(args)


def _report(args: list[str]) -> int:
    from overfit.tracking import report

    return report.main(args)


def _runs(args: list[str]) -> int:
    from overfit.tracking import runs as tracking

    return tracking.runs_main(args)


def _pipeline(args: list[str]) -> int:
    from overfit.pipeline import spec as pipeline

    return pipeline.main(args)


def _ui(args: list[str]) -> int:
    from overfit.tracking import runs as tracking

    print(tracking.ui_command())
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": _train,
    "gradcheck": _gradcheck,
    "report": _report,
    "runs": _runs,
    "pipeline": _pipeline,
    "ui": _ui,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"overfit: error: unknown command {argv[0]!r} (allowed: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        return command(argv[1:])
    except ConfigError as exc:
        print(f"overfit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runs are already closed KILLED
        print("overfit: interrupted", file=sys.stderr)
        return 130
