"""The plan: every job of every stage composed and validated before anything runs.

Overrides merge by key, the later one winning: the file's ``overrides``, then the
stage's, then the command line's (which also replace an axis of the same key). An
``evaluate`` stage starts from the selected job's overrides. A stage that depends
on a selection is composed for every candidate the selection could choose (past
:data:`MAX_VARIANT_JOBS` jobs, with every candidate and every axis value at least
once); a ``search`` stage is validated at the ends of its intervals
(:func:`overfit.compose.expand`). Composed jobs are cached, so the runner's later
calls cost nothing. A composition error is reported at the override behind it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from overfit.errors import ConfigError
from overfit.pipeline import graph
from overfit.pipeline.spec import (GROUPS, REF_BODY, REFERENCE, Axis, Override, Pipeline, Stage, cli_overrides,
                                   hydra_value, load)

if TYPE_CHECKING:
    from omegaconf import DictConfig

MAX_VARIANT_JOBS = 48
SEARCH_KEYS = ("hydra/sweeper", "hydra.sweeper.")  # how a search stage asks for Optuna; not part of a point


@dataclass
class Job:
    """One training job: its overrides (key → text) and composed config."""

    overrides: dict[str, str]
    cfg: DictConfig
    hash: str

    @property
    def point_args(self) -> list[str]:
        """The overrides that make this point, without a search stage's sweeper settings."""
        return [t for k, t in self.overrides.items() if not k.startswith(SEARCH_KEYS)]

    @property
    def launcher(self) -> str:
        return self.overrides.get("hydra/launcher", "hydra/launcher=basic").split("=", 1)[1]


def _seed(o: Override | None) -> int:
    """A seed override's value, or conf/train.yaml's default seed."""
    if o is not None and re.fullmatch(r"\d+", o.value.strip()):
        return int(o.value)
    from omegaconf import OmegaConf

    from overfit import paths

    return int(OmegaConf.load(paths.config_dir() / "train.yaml").seed)


def point_key(key: str) -> str:
    """How a sweep's points name an axis: a group (``loss``) by its option's name (``loss.name``)."""
    return f"{key}.name" if key in GROUPS else key


def merge(*groups: list[Override]) -> dict[str, Override]:
    """Overrides by key, in first-seen order, the last value winning."""
    out: dict[str, Override] = {}
    for group in groups:
        for o in group:
            out[o.key] = o
    return out


def resolve_text(o: Override, chosen: dict[str, Job]) -> Override:
    """``${best.features.order}`` → the selected job's value of ``features.order``."""
    from overfit.tracking.runs import flatten

    def value(m: re.Match[str]) -> str:
        ref = REF_BODY.match(m[1])
        assert ref is not None  # checked by spec.check_override
        flat = flatten(chosen[ref["stage"]].cfg)
        if ref["key"] not in flat:
            raise ConfigError(f"{o.where}: {o.path}", f"${{{m[1]}}}: the selected config has no key {ref['key']!r}")
        return hydra_value(flat[ref["key"]])

    return Override(REFERENCE.sub(value, o.text), o.where, o.path)


class Planner:
    """Composes (and caches) the jobs of every stage; maps errors to file and line."""

    def __init__(self, pipeline: Pipeline, cli: list[Override]) -> None:
        self.pipeline = pipeline
        self.cli = cli
        self._jobs: dict[tuple[str, ...], Job] = {}  # sorted overrides → composed job
        self.experiment = Override(f"experiment_name={hydra_value(pipeline.experiment)}", pipeline.shown, "experiment")

    def stage_overrides(self, stage: Stage, chosen: dict[str, Job]) -> tuple[dict[str, Override], list[Axis]]:
        """The stage's merged fixed overrides and its axes, references resolved."""
        if stage.kind == "evaluate":
            select = graph.selections(self.pipeline, stage)[0]
            base = [Override(t, f"the job selected by {select!r}", select) for t in chosen[select].point_args]
        else:
            base = list(self.pipeline.overrides)
        search = [Override("hydra/sweeper=optuna", stage.where, f"stages.{stage.name}.kind"),
                  Override(f"hydra.sweeper.n_trials={stage.n_trials}", stage.where, f"stages.{stage.name}.n_trials")
                  ] if stage.kind == "search" else []
        own = [resolve_text(o, chosen) for o in stage.overrides]
        cli_keys = {o.key for o in self.cli}
        axes = []
        for a in stage.axes:
            if a.key in cli_keys:
                continue
            resolved = tuple(resolve_text(Override(f"{a.key}={v}", a.where, a.path), chosen).value for v in a.values)
            axes.append(Axis(a.key, resolved, a.where, a.path))
        fixed = merge(base, search, own, self.cli, [self.experiment])
        seeds = self._replicates(stage, fixed) if "seed" not in cli_keys else None
        if seeds is not None:
            axes.append(seeds)
        for a in axes:
            fixed.pop(a.key, None)
        return fixed, axes

    def _replicates(self, stage: Stage, fixed: dict[str, Override]) -> Axis | None:
        """A stage's ``replicates: N`` as its seed axis: a sweep's seeds from its own seed on; an evaluation's
        the next N after every seed the pipeline's sweeps used, so the selection is tested on new draws."""
        if stage.replicates < 2:
            return None
        where, path = stage.where, f"stages.{stage.name}.replicates"
        start = _seed(fixed.get("seed"))
        if stage.kind == "evaluate":
            start = 1 + max((seed for s in self.pipeline.stages.values() if s.kind in graph.SWEEPS
                             for seed in self._seeds_of(s)), default=start - 1)
        return Axis("seed", tuple(str(s) for s in range(start, start + stage.replicates)), where, path)

    def _seeds_of(self, stage: Stage) -> list[int]:
        """The seeds a sweep stage trains with: its seed axis, its replicates, or its one seed."""
        fixed = merge(list(self.pipeline.overrides), stage.overrides, self.cli)
        axis = next((a for a in stage.axes if a.key == "seed"), None)
        if axis is not None:
            return [int(v) for v in axis.values if re.fullmatch(r"\d+", v)]
        start = _seed(fixed.get("seed"))
        return list(range(start, start + stage.replicates))

    def task_args(self, stage: Stage, chosen: dict[str, Job]) -> list[str]:
        """What ``overfit train -m`` gets for this stage: fixed overrides, then the axes."""
        fixed, axes = self.stage_overrides(stage, chosen)
        return [o.text for o in fixed.values()] + [a.override().text for a in axes]

    def jobs(self, stage: Stage, chosen: dict[str, Job], axes_only_first: bool = False) -> list[Job]:
        """Every job of a stage (a search: the ends of its intervals), composed and validated."""
        fixed, axes = self.stage_overrides(stage, chosen)
        if axes_only_first:
            axes = [Axis(a.key, a.values[:1], a.where, a.path) for a in axes]
        return self._compose(stage, list(fixed.values()), axes)

    def job_for(self, stage: Stage, chosen: dict[str, Job], values: dict[str, str]) -> Job:
        """The job of one point of ``stage`` (a search's trial): its fixed overrides and these axis values."""
        fixed, axes = self.stage_overrides(stage, chosen)
        kept = [o for k, o in fixed.items() if not k.startswith(SEARCH_KEYS)]
        return self._compose(stage, kept, [Axis(a.key, (values[point_key(a.key)],), a.where, a.path) for a in axes])[0]

    def _compose(self, stage: Stage, fixed: list[Override], axes: list[Axis]) -> list[Job]:
        from overfit.compose import _one_line, compose_jobs, expand
        from overfit.tracking.runs import config_hash

        sources = [*fixed, *(a.override() for a in axes)]
        args = [o.text for o in sources]
        try:
            expanded = expand(args)
        except Exception as exc:  # Hydra's parser: a typo in an override
            raise self._locate(_one_line(exc), stage, sources) from exc
        keys = [tuple(sorted(t for t in job if not t.startswith(SEARCH_KEYS))) for job in expanded]  # same config
        if not all(k in self._jobs for k in keys):
            try:
                cfgs = compose_jobs(args, multirun=True)
            except ConfigError as exc:
                raise self._locate(exc, stage, sources) from exc
            for k, job_args, cfg in zip(keys, expanded, cfgs):
                self._jobs[k] = Job({text.split("=", 1)[0]: text for text in job_args}, cfg, config_hash(cfg))
        return [self._jobs[k] for k in keys]

    def any_job(self) -> Job:
        return next(iter(self._jobs.values()))

    def _locate(self, exc: ConfigError, stage: Stage, sources: list[Override]) -> ConfigError:
        """The override behind a composition error: same key, else same group, else the stage."""
        def score(o: Override) -> int:
            if o.key == exc.key:
                return 3
            if exc.key.startswith(o.key + ".") or o.key.startswith(exc.key + "."):
                return 2
            if o.key.split(".")[0] == exc.key.split(".")[0]:
                return 1
            return 0

        best = max(reversed(sources), key=score, default=None)
        if best is None or score(best) == 0:
            return ConfigError(f"{stage.where}: stages.{stage.name}", f"{exc.key}: {exc.problem}", exc.allowed)
        problem = exc.problem if best.path.endswith(exc.key) else f"{exc.key}: {exc.problem}"
        return ConfigError(f"{best.where}: {best.path}", problem, exc.allowed)

    def validate(self) -> dict[str, list[Job]]:
        """Compose every job of every stage; candidates for stages behind a selection.

        Returns the jobs of the stages that depend on no selection (known before anything runs).
        """
        static: dict[str, list[Job]] = {}
        candidates: dict[str, list[Job]] = {}  # select stage → every job it may choose
        for stage in self.pipeline.ordered():
            if stage.kind == "select":
                candidates[stage.name] = [j for n in stage.needs for j in static.get(n, candidates.get(n, []))]
                continue
            if stage.kind == "report":
                continue
            used = {r for r, _, _ in stage.references()} | (set(stage.needs) if stage.kind == "evaluate" else set())
            if not set(graph.selections(self.pipeline, stage)) & used:
                static[stage.name] = self.jobs(stage, {})
            else:
                candidates[stage.name] = self._variant_jobs(stage, candidates)
        return static

    def _variant_jobs(self, stage: Stage, candidates: dict[str, list[Job]]) -> list[Job]:
        """The stage's jobs for each distinct thing its selections could choose."""
        from overfit.tracking.runs import flatten

        used = graph.selections(self.pipeline, stage)
        refs = {r: [k for s, k, _ in stage.references() if s == r] for r in used}
        per_select = []
        for n in used:
            distinct: dict[Any, Job] = {}
            for job in candidates.get(n, []):
                if stage.kind == "evaluate":
                    distinct.setdefault(tuple(sorted(job.point_args)), job)
                    continue
                flat = flatten(job.cfg)
                for k in refs[n]:
                    if k not in flat:
                        o = next(o for s, kk, o in stage.references() if s == n and kk == k)
                        raise ConfigError(f"{o.where}: {o.path}", f"${{{n}.{k}}}: {k!r} is not a config key of "
                                          f"every job {n!r} selects from")
                distinct.setdefault(tuple(str(flat[k]) for k in refs[n]), job)
            per_select.append(list(distinct.values()))
        variants = [dict(zip(used, combo)) for combo in itertools.product(*per_select)]
        if not variants:
            return []
        first = self.jobs(stage, variants[0])
        out = list(first)
        cheap = len(first) * len(variants) <= MAX_VARIANT_JOBS
        for chosen in variants[1:]:
            out += self.jobs(stage, chosen, axes_only_first=not cheap)
        return out


def prepare(name: str, args: list[str], config_dir: str | None = None) -> tuple[Pipeline, Planner,
                                                                             dict[str, list[Job]]]:
    """Load the file, order its stages, compose every job: everything a run checks before it starts."""
    pipeline = graph.order(load(name))
    planner = Planner(pipeline, cli_overrides(args, config_dir))
    return pipeline, planner, planner.validate()
