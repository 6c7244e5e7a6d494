"""overfit's Hydra plugins, where Hydra looks for them (the ``hydra_plugins`` namespace).

Hydra imports this module when it scans for plugins, before it composes anything; the
ConfigStore entries below are what overfit's YAML files extend:
``hydra/sweeper=overfit`` (the default sweeper) and ``hydra/launcher=slurm``'s schema. Hydra instantiates plugins from this namespace only, so the
sweeper and launcher classes are named here; they are overfit's own
(:class:`overfit.sweeping.sweeper.GridSweeper`, :class:`overfit.cluster.launcher.SlurmLauncher`).
"""

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore

from overfit.cluster.launcher import SlurmLauncher as ClusterLauncher
from overfit.cluster.schema import SlurmConf
from overfit.sweeping.sweeper import GridSweeper as OverfitSweeper


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.overfit_plugins.GridSweeper"
    max_batch_size: Optional[int] = None


class GridSweeper(OverfitSweeper):
    """:class:`overfit.sweeping.sweeper.GridSweeper`, registered as a Hydra plugin."""


class SlurmLauncher(ClusterLauncher):
    """:class:`overfit.cluster.launcher.SlurmLauncher`, registered as a Hydra plugin."""


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="overfit", node=GridSweeperConf, provider="overfit")
_store.store(group="hydra/launcher", name="overfit_slurm_schema", node=SlurmConf, provider="overfit")
