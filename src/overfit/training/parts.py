"""A config's six components, built from their ``_target_`` with Hydra's ``instantiate``.

Each of ``dataset``, ``features``, ``model``, ``loss``, ``regularizer`` and ``optimizer``
is a YAML whose ``_target_`` names a callable and whose other keys are its arguments. The
callable's signature is the schema: a key it does not take, or a value of the wrong type
for its annotation, is one line naming the key before anything runs. A subclass of the
group's base class (``Dataset``, ``Features``, ``Model``, ``Loss``, ``Regularizer``,
``Optimizer``) is built as it is; any other callable is adopted by that base (a loader of
data, a function building a network, a loss function, a ``torch.optim`` class...).

Nothing here imports PyTorch: validating a sweep does not need it.
"""

from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from omegaconf import DictConfig, OmegaConf

from overfit.data.base import Dataset
from overfit.errors import ConfigError
from overfit.maths.features import Features
from overfit.maths.losses import Loss
from overfit.maths.regularizers import Regularizer
from overfit.training.models import Model
from overfit.training.optimizers import Optimizer

GROUPS: dict[str, type] = {"dataset": Dataset, "features": Features, "model": Model, "loss": Loss,
                           "regularizer": Regularizer, "optimizer": Optimizer}
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_convert_", "_recursive_")
# Keys a group has whatever its callable takes: the trainer reads them (optimizer.batch_size: null = the full batch).
GROUP_KEYS: dict[str, tuple[str, ...]] = {"optimizer": ("batch_size",)}


@dataclass(frozen=True)
class Parts:
    """What a config trains: its six components."""

    dataset: Dataset
    features: Features
    model: Model
    loss: Loss
    regularizer: Regularizer
    optimizer: Optimizer


def build(cfg: DictConfig) -> Parts:
    """The config's components (each built once per distinct YAML node in a process)."""
    return Parts(**{group: component(cfg, group) for group in GROUPS})


def simpler(cfg: DictConfig, keys: list[str]) -> dict[str, str]:
    """Of the swept ``keys`` (``features.order``), those a component declares a capacity knob, with the
    direction that is simpler ("lower" / "higher"): what the one-standard-error rule ranks by."""
    found = {}
    for key in keys:
        group, _, knob = key.partition(".")
        if group in GROUPS and knob:
            direction = getattr(component(cfg, group), "simpler", {}).get(knob)
            if direction in ("lower", "higher"):
                found[key] = direction
    return found


def component(cfg: DictConfig, group: str) -> Any:
    node = cfg.get(group)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(group, f"got {node!r}", f"an option of conf/{group}/, or a YAML with a _target_")
    plain = OmegaConf.to_container(node, resolve=True)
    return _built(group, json.dumps(plain, sort_keys=True, default=str))


@functools.lru_cache(maxsize=4096)
def _built(group: str, text: str) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    plain = json.loads(text)
    name = str(plain["_target_"]).replace(":", ".")  # ``pkg.module:attr`` reads as ``pkg.module.attr``
    target = _locate(group, name)
    if not callable(target):
        raise ConfigError(f"{group}._target_", f"{name} is not callable", "a class or a function")
    knobs = {k: v for k, v in plain.items() if k not in HYDRA_KEYS}
    params, _ = _parameters(target)
    check_signature(group, name, target, {k: v for k, v in knobs.items()
                                          if k not in GROUP_KEYS.get(group, ()) or k in params})
    base = GROUPS[group]
    try:
        made = instantiate(OmegaConf.create({**plain, "_target_": name}), _partial_=True)
        if isinstance(target, type) and issubclass(target, base):
            return made()
        if group == "loss" and isinstance(target, type):  # a loss class of your own (an nn.Module): an instance
            made = made()
    except InstantiationException as exc:
        raise ConfigError(f"{group}._target_", f"{name} could not be built: {exc.__cause__ or exc}") from exc
    adopt = getattr(base, "adopt", None)
    if adopt is None:  # a group whose components all subclass its base
        raise ConfigError(f"{group}._target_", f"{name} is not a {base.__name__}",
                          f"a subclass of {base.__module__}.{base.__name__}")
    return adopt(made)


def _locate(group: str, name: str) -> Any:
    """The object a dotted path names: the longest importable module, then attributes (as Hydra resolves it)."""
    import importlib

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if exc.name is None or not ".".join(parts[:cut]).startswith(exc.name):
                raise  # the module exists but imports something that does not: its own bug, with its traceback
            continue
        try:
            for attribute in parts[cut:]:
                found = getattr(found, attribute)
        except AttributeError:
            break
        return found
    raise ConfigError(f"{group}._target_", f"cannot import {name!r}",
                      "a dotted path to a callable in an installed or importable module (on PYTHONPATH)")


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """The callable's named parameters and their type hints (none where they cannot be resolved)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return {}, {}
    function = target.__init__ if isinstance(target, type) else target
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):  # annotations naming what only a type checker sees
        hints = {}
    return dict(signature.parameters), hints


def check_signature(group: str, name: str, target: Any, knobs: dict[str, Any]) -> None:
    params, hints = _parameters(target)
    if not params:
        return
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = [p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY) and p != "self"]
    for key, value in knobs.items():
        if key not in params and not open_ended:
            raise ConfigError(f"{group}.{key}", f"no such key for {name}", ", ".join(named) or "none")
        if key in hints and not _fits(value, hints[key]):
            raise ConfigError(f"{group}.{key}", f"got {value!r}", _describe(hints[key]))


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a parameter's annotation (plain types, Optional/unions, lists; anything else passes)."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return type(value) is int
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value) if args else \
            isinstance(value, (list, tuple))
    return True


def _describe(hint: Any) -> str:
    """What a user may write for an annotation: ``an integer``, ``null or a number``..."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin in (list, tuple) or hint in (list, tuple):
        args = typing.get_args(hint)
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    return {type(None): "null", bool: "true or false", int: "an integer", float: "a number",
            str: "text"}.get(hint, getattr(hint, "__name__", str(hint)))


def normalize(group: str, node: DictConfig, target: Any = None) -> None:
    """Whole numbers given where the callable takes a float become floats (``lr=3`` is ``lr=3.0``): one point,
    one reuse key, however its numbers are written."""
    if target is None:
        name = node.get("_target_")
        if not isinstance(name, str):
            return
        try:
            target = _locate(group, name.replace(":", "."))
        except ConfigError:
            return  # validation says so, in one line
    _, hints = _parameters(target)
    for key, hint in hints.items():
        value = node.get(key)
        if type(value) is int and (hint is float or (typing.get_origin(hint) in (Union, types.UnionType)
                                                      and float in typing.get_args(hint)
                                                      and int not in typing.get_args(hint))):
            node[key] = float(value)
