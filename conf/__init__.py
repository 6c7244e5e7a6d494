"""overfit's Hydra configs, shipped as the package ``overfit.conf`` (Hydra's ``pkg://overfit.conf``)."""
