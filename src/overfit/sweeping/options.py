"""How overfit runs another sweeper: ``hydra/sweeper=optuna`` gets this project's defaults on the command line.

The plugin's own defaults otherwise: minimize, an in-memory study. Here: a seeded sampler,
so a rerun asks the same trials and reuses them; one trial at a time, each learning from
all before it; a diverged trial (+inf) is a result of the search, not a failure that stops it.
"""

from __future__ import annotations

OPTUNA_DEFAULTS = ("hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_jobs=1", "hydra.sweeper.max_failure_rate=1.0")


def adaptive(args: list[str]) -> bool:
    """An adaptive sweeper picks its points as it goes: composed, a sweep is only its search space's ends."""
    return any(a.startswith("hydra/sweeper=") and a not in ("hydra/sweeper=basic", "hydra/sweeper=overfit")
               for a in args)


def with_sweeper_defaults(args: list[str]) -> list[str]:
    """``args`` with :data:`OPTUNA_DEFAULTS` after them for an Optuna sweep, each unless the user set it."""
    if "hydra/sweeper=optuna" not in args:
        return args
    import optuna

    optuna.logging.disable_default_handler()  # its handler holds the stderr of the moment; Hydra's logging has ours
    optuna.logging.enable_propagation()
    given = {a.split("=", 1)[0] for a in args}
    return [*args, *(d for d in OPTUNA_DEFAULTS if d.split("=", 1)[0] not in given)]
