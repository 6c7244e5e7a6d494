"""overfit's studies, shipped as the package ``overfit.studies``: ``overfit pipeline run polynomial_order``."""
