"""``hydra/launcher=slurm``'s plugin class, where Hydra looks for it.

Hydra instantiates launchers only from the ``hydra_plugins`` namespace package;
the launcher itself is :class:`overfit.cluster.launcher.SlurmLauncher`.
"""

from overfit.cluster.launcher import SlurmLauncher as ClusterLauncher


class SlurmLauncher(ClusterLauncher):
    """:class:`overfit.cluster.launcher.SlurmLauncher`, registered as a Hydra plugin."""
