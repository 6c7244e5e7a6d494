"""Composing what a command would run: every job, validated, before anything runs.

Hydra's compose API builds each job's config — inside the running Hydra app with its search
path (``--config-dir`` included), or from the shipped ``overfit.conf`` outside it;
:func:`overfit.config.validate` checks it. Errors from Hydra and OmegaConf become one
:class:`ConfigError` line.
"""

from __future__ import annotations

import copy
import functools
from contextlib import nullcontext
import itertools
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from overfit import paths
from overfit.config import validate
from overfit.errors import ConfigError


def _one_line(exc: Exception) -> ConfigError:
    """Hydra's and OmegaConf's multi-line composition errors as one ConfigError."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = ", ".join(sorted(exc.options or [])) or None
        return ConfigError(group or option, f"unknown option {option!r}", options)
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    key = getattr(cause, "full_key", None)
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    if isinstance(cause, OmegaConfBaseException) and key:
        problem = next((ln for ln in lines if not ln.startswith(("full_key", "object_type", "reference_type"))), lines[0])
        node = getattr(cause, "parent_node", None)
        if "not in" in problem and isinstance(node, DictConfig):
            owner = str(node.get("_target_", str(key).rsplit(".", 1)[0]))
            return ConfigError(key, f"no such key for {owner}", ", ".join(str(k) for k in node.keys() if k != "_target_"))
        return ConfigError(key, problem)
    return ConfigError("overrides", " ".join(lines[:2]))


@functools.cache
def _default_max_points() -> int:
    return int(OmegaConf.load(paths.config_dir() / "train.yaml").sweep.max_points)


def _points(value: object) -> int:
    """How many values a discrete sweep holds, counted without listing them (``range(0,10**12)`` is one line)."""
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    if isinstance(value, RangeSweep):
        start, stop, step = value.start or 0, value.stop, value.step or 1
        return max(0, math.ceil((stop - start) / step))
    if isinstance(value, ChoiceSweep):
        return len(value.list)
    return 1  # a glob over a group's options: a few files


def check_size(parsed: list) -> None:
    """Refuse, before anything is composed, a grid larger than ``sweep.max_points`` (the command's, or the default)."""
    given = next((o.value() for o in parsed if o.get_key_element() == "sweep.max_points"
                  and not o.is_sweep_override()), None)
    most = given if type(given) is int and given >= 1 else _default_max_points()
    size = math.prod(_points(o.value()) for o in parsed if o.is_sweep_override() and o.is_discrete_sweep())
    if size > most:
        raise ConfigError("sweep.max_points", f"the sweep has {size:,} points, more than the limit of {most:,}",
                          f"at most {most:,} points, or raise the limit: sweep.max_points={size}")


def replicated(overrides: list[str]) -> list[str]:
    """``sweep.replicates=N`` as the seed axis it stands for: ``seed=range(s, s+N)`` from the command's ``seed``.

    Replicates are points like any other (each seed its own run); the seed goes last, so a
    point's replicates are neighbours in the grid and in a vectorized group.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise _one_line(exc) from exc
    given = [o for o in parsed if o.get_key_element() == "sweep.replicates"]
    if not given:
        return overrides
    count = given[-1].value()
    if given[-1].is_sweep_override() or type(count) is not int or count < 1:
        raise ConfigError("sweep.replicates", f"got {given[-1].input_line.split('=', 1)[1]!r}",
                          "a whole number ≥ 1: how many seeds each point trains with")
    seeds = [o for o in parsed if o.get_key_element() == "seed"]
    if any(o.is_sweep_override() for o in seeds):
        raise ConfigError("sweep.replicates", "the seed is swept as well", "one of sweep.replicates=N or seed=...")
    start = seeds[-1].value() if seeds else OmegaConf.load(paths.config_dir() / "train.yaml").seed
    if type(start) is not int:
        raise ConfigError("seed", f"got {start!r}", "an integer: the first replicate's seed")
    kept = [o.input_line for o in parsed if o.get_key_element() not in ("sweep.replicates", "seed")]
    return [*kept, f"seed=range({start},{start + count})" if count > 1 else f"seed={start}"]


def expand(overrides: list[str]) -> list[list[str]]:
    """The jobs a grid sweep makes of ``overrides``: Hydra's basic sweeper's product, last key fastest.

    An interval sweep (for an adaptive sweeper such as Optuna) contributes its two
    ends, so validation sees the extremes the sweeper may try. A grid over
    ``sweep.max_points`` is refused before it is listed.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    parsed = OverridesParser.create().parse_overrides(overrides)
    check_size(parsed)
    by_key: dict[str, list[str]] = {}
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            by_key[key] = [o.input_line]
        elif o.is_discrete_sweep():
            by_key[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            interval = o.value()
            assert isinstance(interval, IntervalSweep)
            by_key[key] = [f"{key}={interval.start}", f"{key}={interval.end}"]
    return [list(job) for job in itertools.product(*by_key.values())]


def _is_value(override: str, groups: tuple[str, ...]) -> bool:
    """A plain ``a.b=value`` override that sets a value, not a group option, a package or an addition."""
    key = override.split("=", 1)[0]
    return not key.startswith(("+", "~", "hydra")) and "@" not in key and "/" not in key and key not in groups


def with_choices(cfg: DictConfig) -> DictConfig:
    """The job's config without Hydra's node, the option chosen in each group kept as ``sweep.choices``."""
    from omegaconf import open_dict, read_write

    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if "/" not in k and not k.startswith("hydra")}
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    cfg.sweep.choices = choices
    return cfg


def compose_jobs(overrides: list[str], multirun: bool, checked: bool = True) -> list[DictConfig]:
    """Compose and validate every job a command would launch, before anything runs.

    Jobs that choose the same group options are composed once by Hydra and differ
    only by value overrides, applied to copies (a 180-point sweep composes one
    config, not 180); a bad value in any point stops the whole sweep before its
    parent run exists. ``checked=False`` leaves each group's checks (:func:`overfit.config.check_groups`,
    which import PyTorch) to the caller: a sweep first looks for finished runs, which were valid when they ran.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        jobs = expand(overrides) if multirun else [overrides]
    except HydraException as exc:  # a typo in the command line
        raise _one_line(exc) from exc
    groups = paths.config_groups()
    parser = OverridesParser.create()
    bases: dict[tuple[str, ...], DictConfig] = {}
    composed = []
    inside = GlobalHydra.instance().is_initialized()  # inside the Hydra app: its search path (--config-dir too)
    with nullcontext() if inside else initialize_config_module("overfit.conf", version_base="1.3", job_name="train"):
        for job in jobs:
            choices = tuple(o for o in job if not _is_value(o, groups))
            try:
                if choices not in bases:
                    bases[choices] = with_choices(compose(config_name="train", overrides=list(choices),
                                                          return_hydra_config=True))
                cfg = copy.deepcopy(bases[choices])
                for o in parser.parse_overrides([o for o in job if _is_value(o, groups)]):
                    OmegaConf.update(cfg, o.get_key_element(), o.value(), merge=False)
            except (HydraException, OmegaConfBaseException) as exc:
                raise _one_line(exc) from exc
            normalize(cfg)
            validate(cfg, groups=checked)
            composed.append(cfg)
    return composed


def normalize(cfg: DictConfig) -> None:
    """Numbers as each component's and schema's signature types them (see :func:`overfit.training.parts.normalize`)."""
    from overfit.config import SCHEMAS
    from overfit.training.parts import GROUPS, normalize

    for group in GROUPS:
        if isinstance(cfg.get(group), DictConfig):
            normalize(group, cfg[group])
    for group, schema in SCHEMAS.items():
        if isinstance(cfg.get(group), DictConfig):
            normalize(group, cfg[group], schema)


def writable_dir(overrides: list[str], key: str, default: Path) -> Path:
    """The folder ``key`` (``hydra.run.dir`` / ``hydra.sweep.dir``) names, or ``default``: one that could not be
    created is bad input, found before any run exists (nothing is created here)."""
    import tempfile

    given = next((a.split("=", 1)[1] for a in overrides if a.startswith(f"{key}=")), None)
    folder = paths.resolve(given) if given else default
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:  # a folder made and removed at once is the only sure test (root may not write /proc)
        Path(tempfile.mkdtemp(dir=existing, prefix=".overfit-")).rmdir()
    except OSError as exc:
        problem = f"cannot create {folder} ({existing}: {exc.strerror or exc})"
        raise ConfigError(key, problem, "a folder this user can write") from exc
    return folder
