"""``overfit train --help`` and ``--cfg``: the config groups, their options and keys, or one composed config."""

from __future__ import annotations

from omegaconf import OmegaConf

from overfit import paths


def text() -> str:
    """Every group with its options (the default marked) and the keys of the default, then the top-level keys."""
    from overfit.compose import compose_jobs

    cfg = compose_jobs([], multirun=False)[0]
    lines = ["usage: overfit train [-m] [group=option ...] [key=value ...]", "",
             "Config groups (conf/<group>/<option>.yaml); pick with group=option, set keys with group.key=value:"]
    for group in paths.config_groups():
        options = sorted(f.stem for f in (paths.config_dir() / group).glob("*.yaml"))
        default = cfg[group].get("name") if group in cfg and "name" in cfg[group] else None
        shown = ", ".join(f"{o} (default)" if o == default else o for o in options)
        lines.append(f"  {group:<12} {shown}")
        keys = [f"{k}={OmegaConf.to_yaml(v).strip() if OmegaConf.is_config(v) else v}"
                for k, v in cfg[group].items() if k != "name"]
        if keys:
            lines.append(f"  {'':<12}   keys: {'  '.join(keys)}")
    lines += ["", "Top level: " + "  ".join(f"{k}={cfg[k]}" for k in ("seed", "experiment_name")),
              "           sweep.rerun=false  (true: retrain sweep points that finished with the same config and code)",
              "", "-m sweeps: features.order=1,2,3  'regularizer.strength=0,1e-2,1'  hydra/launcher=joblib|slurm",
              "--cfg job prints the composed config of these overrides."]
    return "\n".join(lines)


def config(args: list[str]) -> str:
    """The composed, validated config a run of ``args`` would train (``--cfg`` and its argument dropped)."""
    from overfit.compose import compose_jobs

    kept = [a for a in args if a not in ("-c", "--cfg", "job", "all", "hydra", "-m", "--multirun")]
    return OmegaConf.to_yaml(compose_jobs(kept, multirun=False)[0])
