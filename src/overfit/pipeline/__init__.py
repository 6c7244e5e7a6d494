"""Declarative studies: pipeline files (spec), their stage graph, the plan, the runner and the report."""
