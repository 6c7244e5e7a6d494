"""``overfit pipeline run|show|list``: the command line of pipelines."""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    """``overfit pipeline run FILE [overrides] | show FILE [overrides] | list``"""
    parser = argparse.ArgumentParser(prog="overfit pipeline", description="declarative studies from pipelines/*.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (("run", "run the pipeline: train what is not finished, write the report"),
                               ("show", "dry run: every job, finished or would run, on which launcher")):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("file", help="a pipeline file, or a study name in pipelines/")
        p.add_argument("overrides", nargs="*", help="Hydra overrides for every job, e.g. hydra/launcher=joblib "
                       "(the command line may also set tracking.*, dataset.root, dataset.download)")
        p.add_argument("--config-dir", help="a folder of your own options (<group>/<option>.yaml), as for overfit train")
        if command == "run":
            p.add_argument("--detach", action="store_true", help="submit to SLURM and return: a driver job runs "
                           "the stages (follow it with overfit sweep status RUN_ID)")
            p.add_argument("--begin", help="start on SLURM at this time (sbatch --begin: now+60, 02:00, ...)")
            p.add_argument("--scheduled-run", help=argparse.SUPPRESS)  # the driver job: reopen this run
    sub.add_parser("list", help="the studies in pipelines/ and their latest runs")
    args, rest = parser.parse_known_args(argv)  # overrides may also follow --detach / --begin TIME
    if [a for a in rest if a.startswith("-")] or (rest and args.command == "list"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.overrides += rest
    if args.command == "run":  # the runner imports the training stack; show and list never do
        from overfit.pipeline import run

        return run.run(args.file, args.overrides, args.detach, args.begin, args.scheduled_run, args.config_dir)
    from overfit.pipeline import show

    return show.list_pipelines() if args.command == "list" else show.show(args.file, args.overrides, args.config_dir)
