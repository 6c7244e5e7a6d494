"""Declarative pipelines: ``overfit pipeline run|show|list``.

A pipeline file (``pipelines/<study>.yaml``) declares a study as stages::

    name: polynomial_order            # also the report folder: reports/<name>/
    description: >                    # one paragraph: what the study shows
      ...
    experiment: polynomial_order      # MLflow experiment (default: the name)
    overrides:                        # Hydra overrides for every job of every stage
      - dataset=polynomial
      - features=polynomial
    stages:
      orders:                         # a stage's name: letters, digits, _
        kind: sweep                   # a Hydra multirun: one job per point of the axes
        overrides: [dataset.n_val=1000]
        axes:
          features.order: [1, 2, 3]   # a list, or a Hydra sweep string: "range(1,13)"
      best:
        kind: select                  # the best point of the sweeps it needs
        needs: [orders]
        metric: val/error             # default; mode: min (default) or max
      lambdas:
        kind: sweep
        needs: [best]
        overrides: ["features.order=${best.features.order}"]
        axes: {regularizer.strength: [0, 0.01, 1]}
      test:
        kind: evaluate                # the selected config, as a one-point sweep: its test metrics
        needs: [best]                 # optional overrides / axes (e.g. seed: [0, 1, 2])
      report:
        kind: report                  # reports/<name>/report.html + PNGs, logged to the pipeline run
        needs: [orders, best, test]   # optional: history: [train/objective] (metric vs step), title

Stages run in dependency order (file order among independent ones).
``${stage.key}`` in an override or axis value is the selected point's value of
the config key ``key`` (``features.order``, ``regularizer.strength``, ...);
``stage`` must be a ``select`` stage named in ``needs``. Overrides merge by
key, the later one winning: the file's ``overrides``, then the stage's, then
the command line's (``overfit pipeline run FILE trainer.max_epochs=5
hydra/launcher=joblib``), which also replace an axis of the same key. An
``evaluate`` stage starts from the selected job's overrides.

Only overrides of the project's config groups are accepted (``group=option``,
``group.key=value``, ``seed=...``, ``sweep.rerun=...``, ``hydra/launcher=...``,
``hydra.launcher.key=...``); ``_target_`` anywhere, ``+``/``~`` prefixes and
interpolations other than stage references are rejected. Every job is composed
and validated (:func:`overfit.config.compose_jobs`) before anything runs; a
stage that depends on a selection is composed for every candidate selection
(or, past :data:`MAX_VARIANT_JOBS` jobs, with every candidate and every axis
value at least once). Each error is one :class:`~overfit.errors.ConfigError`
keyed ``FILE:LINE: dotted.key``.

A run is one MLflow run (tag ``overfit.pipeline=<name>``, the file as an
artifact) with each stage's sweep parent beneath it; sweep points reuse
FINISHED runs with the same config hash, so a rerun trains only what changed.
``show`` is a dry run that reads the store and writes nothing. This module
holds the format, its validation and the planner; the runner, ``show`` and
``list`` live in :mod:`overfit.pipeline_run`, the HTML report in
:mod:`overfit.pipeline_report`.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overfit import paths
from overfit.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

KINDS = ("sweep", "select", "evaluate", "report")
TOP_KEYS = {"name": True, "description": True, "experiment": False, "overrides": False, "stages": True}
STAGE_KEYS = {
    "sweep": ("overrides", "axes"),
    "select": ("metric", "mode"),
    "evaluate": ("overrides", "axes"),
    "report": ("history", "title"),
}
COMMON_KEYS = ("kind", "needs", "description")
GROUPS = tuple(sorted(d.name for d in paths.config_dir().iterdir() if d.is_dir()))  # conf/<group>/
TOP_LEVEL = ("seed", "sweep.rerun")  # plain keys of conf/train.yaml a pipeline may set
ALLOWED = "group=option or group.key=value for " + ", ".join(GROUPS) + ", seed, sweep.rerun, hydra/launcher, hydra.launcher.KEY"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:[./][A-Za-z0-9_]+)*)=(?P<value>.*)$", re.S)
REFERENCE = re.compile(r"\$\{([^}]*)\}")
REF_BODY = re.compile(r"^(?P<stage>[A-Za-z_][A-Za-z0-9_]*)\.(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)$")
MAX_VARIANT_JOBS = 48
TAG = "overfit.pipeline"


# --- the format ---------------------------------------------------------------
@dataclass(frozen=True)
class Override:
    """One ``key=value`` as written, and where: ``FILE:LINE`` + dotted path, or the command line."""

    text: str
    where: str
    path: str

    @property
    def key(self) -> str:
        return self.text.split("=", 1)[0]

    @property
    def value(self) -> str:
        return self.text.split("=", 1)[1]


@dataclass(frozen=True)
class Axis:
    """A swept key: its values as Hydra override text, or one raw Hydra sweep expression."""

    key: str
    values: tuple[str, ...]
    where: str
    path: str

    def override(self, values: tuple[str, ...] | None = None) -> Override:
        return Override(f"{self.key}={','.join(values or self.values)}", self.where, self.path)


@dataclass
class Stage:
    name: str
    kind: str
    where: str  # FILE:LINE of the stage's name
    needs: list[str] = field(default_factory=list)
    needs_where: str = ""
    description: str = ""
    overrides: list[Override] = field(default_factory=list)
    axes: list[Axis] = field(default_factory=list)
    metric: str = "val/error"
    mode: str = "min"
    history: list[str] = field(default_factory=list)
    title: str = ""

    def references(self) -> list[tuple[str, str, Override]]:
        """``(stage, key, where)`` for every ``${stage.key}`` in the stage's values."""
        found = []
        for o in [*self.overrides, *(a.override() for a in self.axes)]:
            for body in REFERENCE.findall(o.value):
                m = REF_BODY.match(body)
                found.append((m["stage"], m["key"], o))
        return found


@dataclass
class Pipeline:
    name: str
    description: str
    experiment: str
    overrides: list[Override]
    stages: dict[str, Stage]  # in run order
    file: Path
    shown: str  # the file as the user named it, for messages
    text: str

    def ordered(self) -> list[Stage]:
        return list(self.stages.values())


# --- loading YAML with line numbers --------------------------------------------
def _construct(node: Any, shown: str, path: str, lines: dict[str, int]) -> Any:
    """Plain Python values from a composed YAML node; ``lines[path]`` = 1-based line."""
    import yaml

    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{shown}:{key_node.start_mark.line + 1}: {path or '.'}", "keys must be plain names")
            key = str(key_node.value)
            sub = f"{path}.{key}" if path else key
            if key in out:
                raise ConfigError(f"{shown}:{key_node.start_mark.line + 1}: {sub}", "duplicate key")
            out[key] = _construct(value_node, shown, sub, lines)
            lines[sub] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(n, shown, f"{path}[{i}]", lines) for i, n in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _walk_target(value: Any, shown: str, path: str, lines: dict[str, int]) -> None:
    """Reject ``_target_`` anywhere: as a key or inside a value."""
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if "_target_" in k:
                raise ConfigError(f"{shown}:{lines.get(sub, 1)}: {sub}", "_target_ is not allowed: a pipeline names "
                                  "Hydra overrides of the project's config groups, never a Python callable")
            _walk_target(v, shown, sub, lines)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk_target(v, shown, f"{path}[{i}]", lines)
    elif isinstance(value, str) and "_target_" in value:
        raise ConfigError(f"{shown}:{lines.get(path, 1)}: {path}", "_target_ is not allowed: a pipeline names Hydra "
                          "overrides of the project's config groups, never a Python callable")


def hydra_value(value: Any) -> str:
    """A YAML value as Hydra override text: ``true``, ``null``, ``0.001``, ``[16,64]``, ``'a b'``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_.:/+\-]*(\$\{[^}]*\}[A-Za-z0-9_.:/+\-]*)*", text) and text:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_override(o: Override) -> None:
    """Only the project's own config groups; no callables, no additions or deletions."""
    where = f"{o.where}: {o.path}"
    if "_target_" in o.text:
        raise ConfigError(where, "_target_ is not allowed: a pipeline names Hydra overrides of the project's "
                          "config groups, never a Python callable")
    if o.text.startswith(("+", "~")):
        raise ConfigError(where, f"{o.text!r}: adding (+) or deleting (~) config keys is not allowed", ALLOWED)
    m = OVERRIDE.match(o.text)
    if m is None:
        raise ConfigError(where, f"{o.text!r} is not a Hydra override key=value", ALLOWED)
    key, value = m["key"], m["value"]
    head = re.split(r"[./]", key, maxsplit=1)[0]
    if key == "experiment_name":
        raise ConfigError(where, "experiment_name is set by the pipeline's `experiment:`", ALLOWED)
    if key == "sweep.parent_run_id":
        raise ConfigError(where, "sweep.parent_run_id is set by the runner", ALLOWED)
    ok = (head in GROUPS and "/" not in key) or key in TOP_LEVEL or key == "hydra/launcher" or (
        key.startswith("hydra.launcher.") and key.count(".") == 2)
    if not ok:
        raise ConfigError(where, f"{key!r} is not an override of the project's config groups", ALLOWED)
    for body in REFERENCE.findall(value):
        if REF_BODY.match(body) is None:
            raise ConfigError(where, f"${{{body}}} is not a stage reference", "${stage.config.key}, e.g. ${best.features.order}")


def parse(text: str, shown: str, file: Path | None = None) -> Pipeline:
    """The pipeline in ``text``, checked against the schema (not yet composed)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(f"{shown}:{mark.line + 1 if mark else 1}", f"not valid YAML: {exc.problem or exc}") from exc
    lines: dict[str, int] = {}
    data = _construct(root, shown, "", lines) if root is not None else None
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}:1", "a pipeline is a mapping", ", ".join(TOP_KEYS))
    _walk_target(data, shown, "", lines)

    def fail(path: str, problem: str, allowed: str | None = None) -> ConfigError:
        return ConfigError(f"{shown}:{lines.get(path, 1)}: {path}", problem, allowed)

    def where(path: str) -> str:
        return f"{shown}:{lines.get(path, 1)}"

    for key in data:
        if key not in TOP_KEYS:
            raise fail(key, "unknown key", ", ".join(TOP_KEYS))
    for key, required in TOP_KEYS.items():
        if required and key not in data:
            raise ConfigError(f"{shown}:1: {key}", "missing", ", ".join(k for k, r in TOP_KEYS.items() if r))
    name = data["name"]
    if not isinstance(name, str) or not PIPELINE_NAME.match(name):
        raise fail("name", f"{name!r} is not a name", "letters, digits, _ . -")
    if not isinstance(data["description"], str) or not data["description"].strip():
        raise fail("description", "must be a paragraph of text")
    experiment = data.get("experiment", name)
    if not isinstance(experiment, str) or not experiment.strip():
        raise fail("experiment", "must be an experiment name")

    def overrides(path: str, value: Any) -> list[Override]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise fail(path, "must be a list of Hydra overrides", ALLOWED)
        out = []
        for i, item in enumerate(value):
            sub = f"{path}[{i}]"
            if not isinstance(item, str):
                raise fail(sub, f"{item!r} is not an override string", ALLOWED)
            o = Override(item.strip(), where(sub), sub)
            check_override(o)
            out.append(o)
        return out

    def axes(path: str, value: Any) -> list[Axis]:
        if not isinstance(value, dict) or not value:
            raise fail(path, "must map config keys to lists of values", "e.g. features.order: [1, 2, 3]")
        out = []
        for key, values in value.items():
            sub = f"{path}.{key}"
            if isinstance(values, str):
                texts: tuple[str, ...] = (values.strip(),)
            elif isinstance(values, list) and values:
                for i, v in enumerate(values):
                    if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v)):
                        raise fail(f"{sub}[{i}]", f"{v!r} is not a value", "numbers, strings, booleans, lists of them")
                texts = tuple(hydra_value(v) for v in values)
            else:
                raise fail(sub, "must be a non-empty list of values or a Hydra sweep string", "e.g. [1, 2, 3] or range(1,13)")
            if key.startswith("hydra"):
                raise fail(sub, "launcher settings cannot be swept", ALLOWED)
            axis = Axis(key, texts, where(sub), sub)
            check_override(axis.override())
            out.append(axis)
        return out

    stages_raw = data["stages"]
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise fail("stages", "must map stage names to stages", "kind: " + ", ".join(KINDS))
    stages: dict[str, Stage] = {}
    for sname, raw in stages_raw.items():
        path = f"stages.{sname}"
        if not NAME.match(sname):
            raise fail(path, f"{sname!r} is not a stage name", "letters, digits and _, not starting with a digit")
        if not isinstance(raw, dict):
            raise fail(path, "must be a mapping with a kind", "kind: " + ", ".join(KINDS))
        kind = raw.get("kind")
        if kind not in KINDS:
            problem = "missing kind" if kind is None else f"unknown stage kind {kind!r}"
            raise fail(f"{path}.kind" if "kind" in raw else path, problem, ", ".join(KINDS))
        allowed_keys = (*COMMON_KEYS, *STAGE_KEYS[kind])
        for key in raw:
            if key not in allowed_keys:
                raise fail(f"{path}.{key}", f"unknown key for a {kind} stage", ", ".join(allowed_keys))
        needs = raw.get("needs", [])
        if isinstance(needs, str):
            needs = [needs]
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise fail(f"{path}.needs", "must be a list of stage names")
        stage = Stage(sname, kind, where(path), list(needs), where(f"{path}.needs") if "needs" in raw else where(path))
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise fail(f"{path}.description", "must be text")
        stage.description = description.strip()
        if kind in ("sweep", "evaluate"):
            stage.overrides = overrides(f"{path}.overrides", raw.get("overrides"))
            if kind == "sweep" or "axes" in raw:
                if "axes" not in raw:
                    raise fail(path, "a sweep stage needs axes", "e.g. axes: {features.order: [1, 2, 3]}")
                stage.axes = axes(f"{path}.axes", raw["axes"])
        if kind == "select":
            metric = raw.get("metric", "val/error")
            if not isinstance(metric, str) or not re.fullmatch(r"(train|val|test)/\w+|generalization_gap", metric):
                raise fail(f"{path}.metric", f"{metric!r} is not a metric", "val/error, val/loss, val/acc, ...")
            mode = raw.get("mode", "min")
            if mode not in ("min", "max"):
                raise fail(f"{path}.mode", f"unknown mode {mode!r}", "min, max")
            stage.metric, stage.mode = metric, mode
        if kind == "report":
            history = raw.get("history", [])
            history = [history] if isinstance(history, str) else history
            if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
                raise fail(f"{path}.history", "must be a list of metric names", "e.g. [train/objective, val/error]")
            stage.history = history
            title = raw.get("title", "")
            if not isinstance(title, str):
                raise fail(f"{path}.title", "must be text")
            stage.title = title
        stages[sname] = stage
    pipeline = Pipeline(name, " ".join(data["description"].split()), experiment.strip(),
                        overrides("overrides", data.get("overrides")), stages, file or Path(shown), shown, text)
    pipeline.stages = _check_graph(pipeline, lines)
    return pipeline


def _check_graph(pipeline: Pipeline, lines: dict[str, int]) -> dict[str, Stage]:
    """Needs exist, have the right kinds, form no cycle; references point at needed selections."""
    stages = pipeline.stages
    names = ", ".join(stages)
    for s in stages.values():
        for i, n in enumerate(s.needs):
            path = f"stages.{s.name}.needs"
            line = lines.get(f"{path}[{i}]", lines.get(path, 1))
            if n not in stages:
                raise ConfigError(f"{pipeline.shown}:{line}: {path}", f"unknown stage {n!r}", names)
            if n == s.name:
                raise ConfigError(f"{pipeline.shown}:{line}: {path}", f"stage {n!r} needs itself")
    order = _topological(pipeline, lines)
    for s in order:
        kinds = [stages[n].kind for n in s.needs]
        at = f"{s.needs_where}: stages.{s.name}.needs"
        if s.kind == "select" and (not kinds or any(k != "sweep" for k in kinds)):
            raise ConfigError(at, "a select stage needs one or more sweep stages", _of_kind(stages, "sweep"))
        if s.kind == "evaluate" and kinds.count("select") != 1:
            raise ConfigError(at, "an evaluate stage needs exactly one select stage", _of_kind(stages, "select"))
        if s.kind == "report" and not kinds:
            raise ConfigError(at, "a report stage needs the stages it reports on", names)
        for ref_stage, key, o in s.references():
            if ref_stage not in s.needs:
                raise ConfigError(f"{o.where}: {o.path}", f"${{{ref_stage}.{key}}}: stage {ref_stage!r} is not in "
                                  f"needs", ", ".join(n for n in s.needs if stages[n].kind == "select") or None)
            if stages[ref_stage].kind != "select":
                raise ConfigError(f"{o.where}: {o.path}", f"${{{ref_stage}.{key}}}: {ref_stage!r} is a "
                                  f"{stages[ref_stage].kind} stage; only a select stage has values",
                                  _of_kind(stages, "select"))
    return {s.name: s for s in order}


def _of_kind(stages: dict[str, Stage], kind: str) -> str | None:
    return ", ".join(n for n, s in stages.items() if s.kind == kind) or None


def _topological(pipeline: Pipeline, lines: dict[str, int]) -> list[Stage]:
    stages = pipeline.stages
    done: list[Stage] = []
    placed: set[str] = set()
    while len(done) < len(stages):
        ready = [s for s in stages.values() if s.name not in placed and all(n in placed for n in s.needs)]
        if not ready:
            cycle = _cycle({n: s.needs for n, s in stages.items() if n not in placed})
            first = stages[cycle[0]]
            raise ConfigError(f"{first.needs_where}: stages.{first.name}.needs",
                              "needs form a cycle: " + " → ".join([*cycle, cycle[0]]))
        done.append(ready[0])
        placed.add(ready[0].name)
    return done


def _cycle(graph: dict[str, list[str]]) -> list[str]:
    """One cycle of a graph in which every node lies on or leads to a cycle."""
    node, seen = next(iter(graph)), []
    while node not in seen:
        seen.append(node)
        node = next(n for n in graph[node] if n in graph)
    return seen[seen.index(node):]


def locate(name: str) -> tuple[Path, str]:
    """A pipeline file: a path (cwd, then project root) or a bare study name in ``pipelines/``."""
    given = Path(name).expanduser()
    candidates = [given, paths.project_root() / given]
    if given.suffix == "" and len(given.parts) == 1:
        candidates += [d / f"{name}.yaml" for d in pipeline_dirs()]
    for c in candidates:
        if c.is_file():
            try:
                shown = str(c.resolve().relative_to(Path.cwd()))
            except ValueError:
                shown = name if c == given else str(c)
            return c.resolve(), shown
    studies = sorted({p.stem for d in pipeline_dirs() for p in d.glob("*.yaml")})
    raise ConfigError(name, "no such pipeline file", ", ".join(studies) or None)


def pipeline_dirs() -> list[Path]:
    """``pipelines/`` under the project root, then the checkout's own."""
    dirs = [paths.project_root() / "pipelines", paths.config_dir().parent / "pipelines"]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in [x.resolve() for x in dirs[:i]]]


def load(name: str) -> Pipeline:
    file, shown = locate(name)
    return parse(file.read_text(), shown, file)


def cli_overrides(args: list[str]) -> list[Override]:
    out = []
    for i, a in enumerate(args):
        o = Override(a, "command line", f"overrides[{i}]")
        check_override(o)
        if REFERENCE.search(o.value):
            raise ConfigError(f"command line: {a}", "stage references belong in the pipeline file")
        out.append(o)
    return out


# --- planning: every job, composed and validated --------------------------------
@dataclass
class Job:
    """One training job: its overrides (key → text) and composed config."""

    overrides: dict[str, str]
    cfg: DictConfig
    hash: str

    @property
    def args(self) -> list[str]:
        return list(self.overrides.values())

    @property
    def launcher(self) -> str:
        text = self.overrides.get("hydra/launcher", "hydra/launcher=basic")
        return text.split("=", 1)[1]


def merge(*groups: list[Override]) -> dict[str, Override]:
    """Overrides by key, in first-seen order, the last value winning."""
    out: dict[str, Override] = {}
    for group in groups:
        for o in group:
            out[o.key] = o
    return out


def resolve_text(o: Override, chosen: dict[str, Job]) -> Override:
    """``${best.features.order}`` → the selected job's value of ``features.order``."""
    from overfit.config import flatten

    def value(m: re.Match[str]) -> str:
        ref = REF_BODY.match(m[1])
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
        self.experiment = Override(f"experiment_name={pipeline.experiment}", pipeline.shown, "experiment")

    def stage_overrides(self, stage: Stage, chosen: dict[str, Job]) -> tuple[dict[str, Override], list[Axis]]:
        """The stage's merged fixed overrides and its axes, references resolved."""
        if stage.kind == "evaluate":
            select = next(n for n in stage.needs if self.pipeline.stages[n].kind == "select")
            base = [Override(t, f"the job selected by {select!r}", select) for t in chosen[select].args]
        else:
            base = list(self.pipeline.overrides)
        own = [resolve_text(o, chosen) for o in stage.overrides]
        cli_keys = {o.key for o in self.cli}
        axes = []
        for a in stage.axes:
            if a.key in cli_keys:
                continue
            resolved = tuple(resolve_text(Override(f"{a.key}={v}", a.where, a.path), chosen).value for v in a.values)
            axes.append(Axis(a.key, resolved, a.where, a.path))
        fixed = merge(base, own, self.cli, [self.experiment])
        for a in axes:
            fixed.pop(a.key, None)
        return fixed, axes

    def jobs(self, stage: Stage, chosen: dict[str, Job], axes_only_first: bool = False) -> list[Job]:
        """Every job of a sweep or evaluate stage, composed and validated."""
        from overfit import config
        from overfit.tracking import runs as tracking

        fixed, axes = self.stage_overrides(stage, chosen)
        if axes_only_first:
            axes = [Axis(a.key, a.values[:1], a.where, a.path) for a in axes]
        args = [o.text for o in fixed.values()] + [a.override().text for a in axes]
        sources = [*fixed.values(), *(a.override() for a in axes)]
        try:
            expanded = expand(args)
        except Exception as exc:  # Hydra's parser: a typo in an override
            raise self._locate(config._one_line(exc), stage, sources) from exc
        keys = [tuple(sorted(job)) for job in expanded]
        if not all(k in self._jobs for k in keys):
            try:
                cfgs = config.compose_jobs(args, multirun=True)
            except ConfigError as exc:
                raise self._locate(exc, stage, sources) from exc
            for k, job_args, cfg in zip(keys, expanded, cfgs):
                self._jobs[k] = Job({text.split("=", 1)[0]: text for text in job_args}, cfg, tracking.config_hash(cfg))
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
        """Compose every job of every stage; candidates for stages behind a selection."""
        static: dict[str, list[Job]] = {}
        candidates: dict[str, list[Job]] = {}  # select stage → every job it may choose
        stages = self.pipeline.stages
        for stage in self.pipeline.ordered():
            if stage.kind == "select":
                candidates[stage.name] = [j for n in stage.needs for j in static.get(n, candidates.get(n, []))]
                continue
            if stage.kind == "report":
                continue
            selects = sorted({n for n in stage.needs if stages[n].kind == "select"}
                             & ({r for r, _, _ in stage.references()} | ({*stage.needs} if stage.kind == "evaluate" else set())))
            if not selects:
                static[stage.name] = self.jobs(stage, {})
            else:
                candidates[stage.name] = self._variant_jobs(stage, candidates)
        return static

    def _variant_jobs(self, stage: Stage, candidates: dict[str, list[Job]]) -> list[Job]:
        stages = self.pipeline.stages
        used = [n for n in stage.needs if stages[n].kind == "select"]
        refs = {r: [k for s, k, _ in stage.references() if s == r] for r in used}
        per_select = []
        for n in used:
            distinct: dict[Any, Job] = {}
            for job in candidates.get(n, []):
                if stage.kind == "evaluate":
                    distinct.setdefault(tuple(sorted(job.args)), job)
                else:
                    from overfit.config import flatten

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


def expand(args: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of ``args``, in its order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(args)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def load_and_plan(name: str, args: list[str]) -> tuple[Pipeline, Planner, dict[str, list[Job]]]:
    pipeline = load(name)
    planner = Planner(pipeline, cli_overrides(args))
    return pipeline, planner, planner.validate()


def main(argv: list[str]) -> int:
    """``overfit pipeline run FILE [overrides] | show FILE [overrides] | list``"""
    parser = argparse.ArgumentParser(prog="overfit pipeline", description="declarative studies from pipelines/*.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (("run", "run the pipeline: train what is not finished, write the report"),
                               ("show", "dry run: every job, finished or would run, on which launcher")):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("file", help="a pipeline file, or a study name in pipelines/")
        p.add_argument("overrides", nargs="*", help="Hydra overrides for every job, e.g. hydra/launcher=joblib")
    sub.add_parser("list", help="the studies in pipelines/ and their latest runs")
    args = parser.parse_args(argv)
    from overfit.pipeline import run as pipeline_run

    if args.command == "list":
        return pipeline_run.list_pipelines()
    if args.command == "show":
        return pipeline_run.show(args.file, args.overrides)
    return pipeline_run.run(args.file, args.overrides)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
