"""The stages as a graph: what each needs exists and has the right kind, and the order they run in.

Order comes from :class:`graphlib.TopologicalSorter`; among stages that are ready
together, the one written first runs first, so a file reads top to bottom.
"""

from __future__ import annotations

from dataclasses import replace
from graphlib import CycleError, TopologicalSorter

from overfit.errors import ConfigError
from overfit.pipeline.spec import Pipeline, Stage

SWEEPS = ("sweep", "search")  # stages whose points a select stage chooses from


def of_kind(stages: dict[str, Stage], *kinds: str) -> str | None:
    """The names of the stages of these kinds, for an error's "allowed"."""
    return ", ".join(n for n, s in stages.items() if s.kind in kinds) or None


def selections(pipeline: Pipeline, stage: Stage) -> list[str]:
    """The select stages ``stage`` needs."""
    return [n for n in stage.needs if pipeline.stages[n].kind == "select"]


def run_order(pipeline: Pipeline) -> list[str]:
    """Stage names in an order that runs each after what it needs; a cycle is one error naming it."""
    stages = pipeline.stages
    position = {name: i for i, name in enumerate(stages)}
    sorter = TopologicalSorter({name: s.needs for name, s in stages.items()})
    try:
        sorter.prepare()
    except CycleError as exc:
        cycle: list[str] = exc.args[1]
        first = stages[cycle[0]]
        raise ConfigError(f"{first.needs_where}: stages.{first.name}.needs",
                          "needs form a cycle: " + " → ".join(cycle)) from exc
    order: list[str] = []
    ready: set[str] = set()
    while sorter.is_active():
        ready.update(sorter.get_ready())
        name = min(ready, key=position.__getitem__)
        ready.remove(name)
        order.append(name)
        sorter.done(name)
    return order


def _check_needs(pipeline: Pipeline) -> None:
    """Every need names another stage of the file."""
    names = ", ".join(pipeline.stages)
    for s in pipeline.stages.values():
        for n, where in zip(s.needs, s.needs_lines):
            at = f"{where}: stages.{s.name}.needs"
            if n not in pipeline.stages:
                raise ConfigError(at, f"unknown stage {n!r}", names)
            if n == s.name:
                raise ConfigError(at, f"stage {n!r} needs itself")


def _check_kinds(pipeline: Pipeline, stage: Stage) -> None:
    """What each kind needs, and that ``${stage.key}`` names a select stage the stage needs."""
    stages = pipeline.stages
    kinds = [stages[n].kind for n in stage.needs]
    at = f"{stage.needs_where}: stages.{stage.name}.needs"
    if stage.kind == "select" and (not kinds or any(k not in SWEEPS for k in kinds)):
        raise ConfigError(at, "a select stage needs one or more sweep or search stages", of_kind(stages, *SWEEPS))
    if stage.kind == "select" and stage.rule == "one_se":
        single = [n for n in stage.needs if stages[n].replicates < 2 and not any(a.key == "seed" for a in stages[n].axes)]
        if single:
            raise ConfigError(f"{stage.where}: stages.{stage.name}.rule", f"one_se needs replicates, but "
                              f"{', '.join(repr(n) for n in single)} trains each point once",
                              "replicates: N (N ≥ 2) on the sweep, or rule: min")
    if stage.kind == "evaluate" and kinds.count("select") != 1:
        raise ConfigError(at, "an evaluate stage needs exactly one select stage", of_kind(stages, "select"))
    if stage.kind == "report" and not kinds:
        raise ConfigError(at, "a report stage needs the stages it reports on", ", ".join(stages))
    for ref_stage, key, o in stage.references():
        if ref_stage not in stage.needs:
            raise ConfigError(f"{o.where}: {o.path}", f"${{{ref_stage}.{key}}}: stage {ref_stage!r} is not in needs",
                              ", ".join(selections(pipeline, stage)) or None)
        if stages[ref_stage].kind != "select":
            raise ConfigError(f"{o.where}: {o.path}", f"${{{ref_stage}.{key}}}: {ref_stage!r} is a "
                              f"{stages[ref_stage].kind} stage; only a select stage has values", of_kind(stages, "select"))


def order(pipeline: Pipeline) -> Pipeline:
    """The pipeline with its needs checked and its stages in run order."""
    _check_needs(pipeline)
    names = run_order(pipeline)
    for name in names:
        _check_kinds(pipeline, pipeline.stages[name])
    return replace(pipeline, stages={name: pipeline.stages[name] for name in names})
