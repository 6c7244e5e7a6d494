"""A vectorized sweep's plan: its jobs (units), each a group of points or one point, in a file every job reads.

Light on purpose (JSON, no training imports): the launcher, ``overfit sweep status`` and
the jobs themselves read it on any node.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

MAX_GROUP = 256  # points per batched model: beyond this, a group is split (memory grows with M)
TAG_PLAN = "overfit.plan"  # on a vectorized sweep's parent: its plan file



def plan_file(parent_run_id: str) -> str:
    """The plan's name in the sweep directory: the sweep's own, so sweeps sharing a directory never mix."""
    return f"groups-{parent_run_id[:12]}.json"


@dataclass
class Member:
    """One point of a unit: its job number in the sweep, overrides, run name and composed config."""

    num: int
    overrides: list[str]
    name: str
    config: dict[str, Any]  # the composed config, interpolations unresolved (a JSON document: YAML costs 10×)

    def cfg(self, parent_run_id: str | None) -> DictConfig:
        cfg = OmegaConf.create(self.config)
        cfg.sweep.parent_run_id = parent_run_id
        return cfg


def write_plan(path: Path, units: list[list[Member]]) -> None:
    """The units a vectorized sweep launches, where every job (any launcher, any node) reads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.tmp")
    aside.write_text(json.dumps([[asdict(m) for m in unit] for unit in units]))
    aside.replace(path)


def read_units(path: Path) -> list[list[Member]]:
    return [[Member(**m) for m in unit] for unit in json.loads(path.read_text())]


def read_unit(path: Path, unit: int) -> list[Member]:
    return read_units(path)[unit]
