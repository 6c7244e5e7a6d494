"""Declarative studies: the file format (spec), its stage graph, the plan, the runner, its results and report.

Imports go one way: spec ← graph ← plan ← results ← report ← run; show (the dry run
and ``list``) reads the plan and the store only; cli dispatches.
"""
