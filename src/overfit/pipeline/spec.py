"""The pipeline file format: what a study may say, read with line numbers, checked against the schema.

A pipeline file (``pipelines/<study>.yaml``) declares a study as stages::

    name: polynomial_order            # the MLflow pipeline run's name, and reports/<name>/
    description: >                    # one paragraph: what the study shows (the run's description)
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
      lambdas:
        kind: search                  # Optuna (hydra/sweeper=optuna): n_trials points, each chosen
        n_trials: 12                  # from the results before it, by validation error
        axes:
          regularizer.strength: tag(log, interval(1e-5, 10))
      best:
        kind: select                  # the best point of the sweeps and searches it needs
        needs: [orders]
        metric: val/error             # default; mode: min (default) or max
      test:
        kind: evaluate                # the selected config, as a one-point sweep: its test metrics
        needs: [best]                 # optional overrides / axes (e.g. seed: [0, 1, 2])
      report:
        kind: report                  # reports/<name>/report.html + PNGs, logged to the pipeline run
        needs: [orders, best, test]   # optional: history: [train/objective] (metric vs epoch), title

``${stage.key}`` in an override or axis value is the selected point's value of the
config key ``key``; ``stage`` must be a ``select`` stage named in ``needs``
(checked by :mod:`overfit.pipeline.graph`).

What a study may change is an allow-list (:func:`check_override`): the project's
config groups (``group=option``, ``group.key=value``), ``seed``, ``sweep.rerun``,
``hydra/launcher``, ``hydra.launcher.KEY``, ``hydra/sweeper``, ``hydra.sweeper.KEY``.
A file may not say where runs are recorded (``tracking``), where data lives or
whether to download it (``dataset.root``, ``dataset.download``), nor set paths or
commands of the launcher and sweeper; the command line may set the first three.
The input is bounded: at most :data:`MAX_BYTES`, no YAML anchors, aliases or
tags, nesting at most :data:`MAX_DEPTH` deep. Every error is one
:class:`~overfit.errors.ConfigError` keyed ``FILE:LINE: dotted.key``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overfit import paths
from overfit.errors import ConfigError

KINDS = ("sweep", "search", "select", "evaluate", "report")
TOP_KEYS = {"name": True, "description": True, "experiment": False, "overrides": False, "stages": True}
STAGE_KEYS = {
    "sweep": ("overrides", "axes", "replicates"),
    "search": ("overrides", "axes", "n_trials"),
    "select": ("metric", "mode", "rule"),
    "evaluate": ("overrides", "axes", "replicates"),
    "report": ("history", "title"),
}
COMMON_KEYS = ("kind", "needs", "description")
GROUPS = tuple(g for g in paths.config_groups() if g != "hydra")  # conf/<group>/; conf/hydra/ is Hydra's own
TOP_LEVEL = ("seed", "sweep.rerun")  # plain keys of conf/train.yaml a pipeline may set
# Keys a pipeline file may not set: where runs are recorded, where data lives, whether to download it.
FILE_DENIED = {
    "tracking": "where runs are recorded is the operator's choice",
    "dataset.root": "where data lives is the operator's choice",
    "dataset.download": "downloading is the operator's choice",
}
# Launcher and sweeper keys that are paths or code, not settings: denied everywhere.
HYDRA_DENIED = ("hydra.launcher.submitit_folder", "hydra.launcher.temp_folder", "hydra.launcher.setup",
                "hydra.sweeper.storage", "hydra.sweeper.custom_search_space")
ALLOWED = ("group=option or group.key=value for " + ", ".join(g for g in GROUPS if g != "tracking")
           + " (not dataset.root, dataset.download), seed, sweep.rerun, hydra/launcher, hydra.launcher.KEY, "
           "hydra/sweeper, hydra/sweeper/sampler, hydra.sweeper.KEY")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:[./][A-Za-z0-9_]+)*)=(?P<value>.*)$", re.S)
REFERENCE = re.compile(r"\$\{([^}]*)\}")
REF_BODY = re.compile(r"^(?P<stage>[A-Za-z_][A-Za-z0-9_]*)\.(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)$")
MAX_BYTES = 256 * 1024
MAX_DEPTH = 16
MAX_TRIALS = 10_000
MAX_REPLICATES = 10_000
RULES = ("min", "one_se")  # a select stage's choice: the best mean, or the simplest within one standard error
TAG = "overfit.pipeline"  # on a pipeline run: the study's name
TARGET = "_target_ is not allowed: a pipeline names Hydra overrides of the project's config groups, never a Python callable"


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

    def override(self) -> Override:
        """The axis as one Hydra sweep override: ``features.order=1,2,3``."""
        return Override(f"{self.key}={','.join(self.values)}", self.where, self.path)


@dataclass
class Stage:
    name: str
    kind: str
    where: str  # FILE:LINE of the stage's name
    needs: list[str] = field(default_factory=list)
    needs_where: str = ""  # FILE:LINE of ``needs`` (of the stage when absent)
    needs_lines: list[str] = field(default_factory=list)  # FILE:LINE of each need
    description: str = ""
    overrides: list[Override] = field(default_factory=list)
    axes: list[Axis] = field(default_factory=list)
    n_trials: int = 20
    replicates: int = 1  # seeds per point: a sweep's from the pipeline's seed on, an evaluation's new ones
    metric: str = "val/error"
    mode: str = "min"
    rule: str = "min"
    history: list[str] = field(default_factory=list)
    title: str = ""

    def references(self) -> list[tuple[str, str, Override]]:
        """``(stage, key, where)`` for every ``${stage.key}`` in the stage's values."""
        found = []
        for o in [*self.overrides, *(a.override() for a in self.axes)]:
            for body in REFERENCE.findall(o.value):
                m = REF_BODY.match(body)
                if m is not None:
                    found.append((m["stage"], m["key"], o))
        return found


@dataclass
class Pipeline:
    name: str
    description: str
    experiment: str
    overrides: list[Override]
    stages: dict[str, Stage]  # in file order until :func:`overfit.pipeline.graph.order` puts them in run order
    file: Path
    shown: str  # the file as the user named it, for messages
    text: str

    def ordered(self) -> list[Stage]:
        return list(self.stages.values())


# --- reading YAML: bounded, with line numbers ---------------------------------------
def _check_events(text: str, shown: str) -> None:
    """Reject what would let a small file grow big or run code: anchors/aliases, tags, deep nesting.

    Streams the parser's events (no tree is built), so an alias bomb is one line, not memory exhaustion.
    """
    import yaml

    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = f"{shown}:{event.start_mark.line + 1}"
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(line, "YAML anchors and aliases (&name, *name) are not allowed in a pipeline file",
                                  "write each value out")
            if getattr(event, "tag", None):  # scalars and collections; an explicit !!tag or !local one
                raise ConfigError(line, f"YAML tags ({event.tag}) are not allowed in a pipeline file",
                                  "plain values: numbers, strings, booleans, lists, mappings")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(line, f"nested more than {MAX_DEPTH} levels deep")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _invalid(exc, text, shown) from exc


def _invalid(exc: Exception, text: str, shown: str) -> ConfigError:
    """A YAML error as ``FILE:LINE``: a parser's mark, or the reader's position of a character YAML refuses."""
    import yaml

    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        return ConfigError(f"{shown}:{line}", f"not valid YAML: character {char} is not allowed",
                           "printable text (no NUL or other control characters)")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return ConfigError(f"{shown}:{mark.line + 1 if mark else 1}", f"not valid YAML: {getattr(exc, 'problem', None) or exc}")


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


def read_yaml(text: str, shown: str) -> tuple[Any, dict[str, int]]:
    """The document in ``text`` and the line of every dotted path in it; bounded (see module doc)."""
    import yaml

    size = len(text.encode())
    if size > MAX_BYTES:
        raise ConfigError(shown, f"{size // 1024} KiB is too large for a pipeline file", f"at most {MAX_BYTES // 1024} KiB")
    _check_events(text, shown)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _invalid(exc, text, shown) from exc
    lines: dict[str, int] = {}
    return (_construct(root, shown, "", lines) if root is not None else None), lines


def _walk_target(value: Any, shown: str, path: str, lines: dict[str, int]) -> None:
    """Reject ``_target_`` anywhere: as a key or inside a value."""
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if "_target_" in k:
                raise ConfigError(f"{shown}:{lines.get(sub, 1)}: {sub}", TARGET)
            _walk_target(v, shown, sub, lines)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk_target(v, shown, f"{path}[{i}]", lines)
    elif isinstance(value, str) and "_target_" in value:
        raise ConfigError(f"{shown}:{lines.get(path, 1)}: {path}", TARGET)


# --- what a study may change ---------------------------------------------------------
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


def _check_hydra_key(key: str, where: str) -> None:
    """Launcher and sweeper choices and settings; nothing else of Hydra's (its run and sweep dirs)."""
    choice = key in ("hydra/launcher", "hydra/sweeper", "hydra/sweeper/sampler")
    setting = key.startswith(("hydra.launcher.", "hydra.sweeper.")) and "/" not in key
    if not (choice or setting):
        raise ConfigError(where, f"{key!r} is not an override a pipeline may set", ALLOWED)
    if any(key == d or key.startswith(d + ".") for d in HYDRA_DENIED):
        raise ConfigError(where, f"{key} is a path or a command, not a setting a pipeline may change", ALLOWED)


def check_override(o: Override, from_file: bool = True) -> None:
    """The allow-list: the project's config groups, a few top-level keys, the launcher and sweeper.

    ``from_file``: a pipeline file may not set tracking, data paths or downloads (the command line may).
    """
    where = f"{o.where}: {o.path}"
    if "_target_" in o.text:
        raise ConfigError(where, TARGET)
    if o.text.startswith(("+", "~")):
        raise ConfigError(where, f"{o.text!r}: adding (+) or deleting (~) config keys is not allowed", ALLOWED)
    m = OVERRIDE.match(o.text)
    if m is None:
        raise ConfigError(where, f"{o.text!r} is not a Hydra override key=value", ALLOWED)
    key, value = m["key"], m["value"]
    head = re.split(r"[./]", key, maxsplit=1)[0]
    if key == "experiment_name":
        raise ConfigError(where, "experiment_name is set by the pipeline's `experiment:`", ALLOWED)
    if head == "sweep" and key not in TOP_LEVEL:
        raise ConfigError(where, f"{key} is set by the runner", ALLOWED)
    if head == "hydra":
        _check_hydra_key(key, where)
    elif not ((head in GROUPS and "/" not in key) or key in TOP_LEVEL):
        raise ConfigError(where, f"{key!r} is not an override of the project's config groups", ALLOWED)
    denied = next((d for d in FILE_DENIED if key == d or key.startswith(d + ".")), None)
    if from_file and denied is not None:
        raise ConfigError(where, f"a pipeline file may not set {key}: {FILE_DENIED[denied]} "
                          "(give it on the command line)", ALLOWED)
    for body in REFERENCE.findall(value):
        if REF_BODY.match(body) is None:
            raise ConfigError(where, f"${{{body}}} is not a stage reference", "${stage.config.key}, e.g. ${best.features.order}")


def cli_overrides(args: list[str], config_dir: str | None = None) -> list[Override]:
    """The command line's overrides, on the same allow-list (tracking, data paths and downloads allowed).

    ``config_dir``: a folder of the user's own options (``--config-dir``), added to Hydra's search path.
    """
    out = []
    if config_dir:
        folder = Path(config_dir).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError("--config-dir", f"{folder} is not a folder", "a folder of <group>/<option>.yaml files")
        out.append(Override(f"hydra.searchpath=[file://{folder}]", "command line", "--config-dir"))
    for i, a in enumerate(args):
        o = Override(a, "command line", f"overrides[{i}]")
        check_override(o, from_file=False)
        if REFERENCE.search(o.value):
            raise ConfigError(f"command line: {a}", "stage references belong in the pipeline file")
        out.append(o)
    return out


# --- the schema -------------------------------------------------------------------------
class _Reader:
    """Turns the loaded document into a :class:`Pipeline`; each error names the file, line and key."""

    def __init__(self, shown: str, lines: dict[str, int]) -> None:
        self.shown, self.lines = shown, lines

    def where(self, path: str) -> str:
        return f"{self.shown}:{self.lines.get(path, 1)}"

    def fail(self, path: str, problem: str, allowed: str | None = None) -> ConfigError:
        return ConfigError(f"{self.where(path)}: {path}", problem, allowed)

    def overrides(self, path: str, value: Any) -> list[Override]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, "must be a list of Hydra overrides", ALLOWED)
        out = []
        for i, item in enumerate(value):
            sub = f"{path}[{i}]"
            if not isinstance(item, str):
                raise self.fail(sub, f"{item!r} is not an override string", ALLOWED)
            o = Override(item.strip(), self.where(sub), sub)
            check_override(o)
            out.append(o)
        return out

    def axes(self, path: str, value: Any, kind: str) -> list[Axis]:
        if not isinstance(value, dict) or not value:
            raise self.fail(path, "must map config keys to lists of values", "e.g. features.order: [1, 2, 3]")
        out = []
        for key, values in value.items():
            sub = f"{path}.{key}"
            if isinstance(values, str):
                texts: tuple[str, ...] = (values.strip(),)
            elif isinstance(values, list) and values:
                for i, v in enumerate(values):
                    if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v)):
                        raise self.fail(f"{sub}[{i}]", f"{v!r} is not a value", "numbers, strings, booleans, lists of them")
                texts = tuple(hydra_value(v) for v in values)
            else:
                raise self.fail(sub, "must be a non-empty list of values or a Hydra sweep string",
                                "e.g. [1, 2, 3] or range(1,13)")
            if key.startswith("hydra"):
                raise self.fail(sub, "launcher and sweeper settings cannot be swept", ALLOWED)
            if kind != "search" and any("interval(" in t for t in texts):
                raise self.fail(sub, "an interval is searched, not swept", "kind: search, or a list of values")
            axis = Axis(key, texts, self.where(sub), sub)
            check_override(axis.override())
            out.append(axis)
        return out

    def stage(self, name: str, raw: Any) -> Stage:
        path = f"stages.{name}"
        if not NAME.match(name):
            raise self.fail(path, f"{name!r} is not a stage name", "letters, digits and _, not starting with a digit")
        if not isinstance(raw, dict):
            raise self.fail(path, "must be a mapping with a kind", "kind: " + ", ".join(KINDS))
        kind = raw.get("kind")
        if kind not in KINDS:
            problem = "missing kind" if kind is None else f"unknown stage kind {kind!r}"
            raise self.fail(f"{path}.kind" if "kind" in raw else path, problem, ", ".join(KINDS))
        allowed_keys = (*COMMON_KEYS, *STAGE_KEYS[kind])
        for key in raw:
            if key not in allowed_keys:
                raise self.fail(f"{path}.{key}", f"unknown key for a {kind} stage", ", ".join(allowed_keys))
        needs = raw.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise self.fail(f"{path}.needs", "must be a list of stage names")
        needs_where = self.where(f"{path}.needs") if "needs" in raw else self.where(path)
        stage = Stage(name, kind, self.where(path), list(needs), needs_where,
                      [f"{self.shown}:{self.lines.get(f'{path}.needs[{i}]', self.lines.get(f'{path}.needs', 1))}"
                       for i in range(len(needs))])
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise self.fail(f"{path}.description", "must be text")
        stage.description = description.strip()
        if kind in ("sweep", "search", "evaluate"):
            stage.overrides = self.overrides(f"{path}.overrides", raw.get("overrides"))
            if kind != "evaluate" and "axes" not in raw:
                raise self.fail(path, f"a {kind} stage needs axes", "e.g. axes: {features.order: [1, 2, 3]}")
            if "axes" in raw:
                stage.axes = self.axes(f"{path}.axes", raw["axes"], kind)
        if "replicates" in raw:
            replicates = raw["replicates"]
            if type(replicates) is not int or not 1 <= replicates <= MAX_REPLICATES:
                raise self.fail(f"{path}.replicates", f"got {replicates!r}", f"an integer in [1, {MAX_REPLICATES}]")
            if any(a.key == "seed" for a in stage.axes):
                raise self.fail(f"{path}.replicates", "the seed is an axis as well", "replicates: N or a seed axis")
            stage.replicates = replicates
        if kind == "search":
            n_trials = raw.get("n_trials", stage.n_trials)
            if type(n_trials) is not int or not 1 <= n_trials <= MAX_TRIALS:
                raise self.fail(f"{path}.n_trials", f"got {n_trials!r}", f"an integer in [1, {MAX_TRIALS}]")
            stage.n_trials = n_trials
        if kind == "select":
            metric = raw.get("metric", "val/error")
            if not isinstance(metric, str) or not re.fullmatch(r"(train|val|test)/\w+|generalization_gap", metric):
                raise self.fail(f"{path}.metric", f"{metric!r} is not a metric", "val/error, val/loss, val/acc, ...")
            mode = raw.get("mode", "min")
            if mode not in ("min", "max"):
                raise self.fail(f"{path}.mode", f"unknown mode {mode!r}", "min, max")
            rule = raw.get("rule", "min")
            if rule not in RULES:
                raise self.fail(f"{path}.rule", f"unknown rule {rule!r}", "min (the best mean), one_se (the simplest "
                                "point within one standard error of it: needs replicates)")
            stage.metric, stage.mode, stage.rule = metric, mode, rule
        if kind == "report":
            history = raw.get("history", [])
            history = [history] if isinstance(history, str) else history
            if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
                raise self.fail(f"{path}.history", "must be a list of metric names", "e.g. [train/objective, val/error]")
            stage.history = history
            title = raw.get("title", "")
            if not isinstance(title, str):
                raise self.fail(f"{path}.title", "must be text")
            stage.title = title
        return stage


def parse(text: str, shown: str, file: Path | None = None) -> Pipeline:
    """The pipeline in ``text``, checked against the schema; stages in file order, not yet composed."""
    from overfit.config import EXPERIMENT_ALLOWED, EXPERIMENT_NAME

    data, lines = read_yaml(text, shown)
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}:1", "a pipeline is a mapping", ", ".join(TOP_KEYS))
    _walk_target(data, shown, "", lines)
    reader = _Reader(shown, lines)
    for key in data:
        if key not in TOP_KEYS:
            raise reader.fail(key, "unknown key", ", ".join(TOP_KEYS))
    for key, required in TOP_KEYS.items():
        if required and key not in data:
            raise ConfigError(f"{shown}:1: {key}", "missing", ", ".join(k for k, r in TOP_KEYS.items() if r))
    name = data["name"]
    if not isinstance(name, str) or not PIPELINE_NAME.match(name):
        raise reader.fail("name", f"{name!r} is not a name", "letters, digits, _ . -, at most 100 characters")
    if not isinstance(data["description"], str) or not data["description"].strip():
        raise reader.fail("description", "must be a paragraph of text")
    experiment = data.get("experiment", name)
    if not isinstance(experiment, str) or not EXPERIMENT_NAME.fullmatch(experiment):
        raise reader.fail("experiment", f"{experiment!r} is not a plain experiment name (it names a folder "
                          "in the store)", EXPERIMENT_ALLOWED)
    stages_raw = data["stages"]
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise reader.fail("stages", "must map stage names to stages", "kind: " + ", ".join(KINDS))
    stages = {sname: reader.stage(sname, raw) for sname, raw in stages_raw.items()}
    return Pipeline(name, " ".join(data["description"].split()), experiment,
                    reader.overrides("overrides", data.get("overrides")), stages, file or Path(shown), shown, text)


# --- finding files -------------------------------------------------------------------------
def pipeline_dirs() -> list[Path]:
    """Where studies are found: ``pipelines/`` in the working directory, under the project root, then the
    studies shipped with the package."""
    dirs = [Path.cwd() / "pipelines", paths.project_root() / "pipelines", paths.studies_dir()]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in [x.resolve() for x in dirs[:i]]]


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


def read(file: Path, shown: str) -> Pipeline:
    """Parse one file, refusing to read more than :data:`MAX_BYTES` of it."""
    size = file.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(shown, f"{size // 1024} KiB is too large for a pipeline file", f"at most {MAX_BYTES // 1024} KiB")
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, f"cannot be read: {exc}") from exc
    return parse(text, shown, file)


def load(name: str) -> Pipeline:
    file, shown = locate(name)
    return read(file, shown)
