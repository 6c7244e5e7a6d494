"""A point's run for its whole life: claimed by its reuse key, trained, recorded, ended honestly.

Above training (which knows nothing of MLflow) and the store; below sweeps and pipelines.
"""
