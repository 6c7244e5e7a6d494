"""Sweeps as Hydra runs them: overfit's grid sweeper, a callback for any other sweeper, the sweep's parent run.

Above the run lifecycle (each job claims and trains its points) and below pipelines and the CLI.
"""
