"""Test helpers: the store's runs, composed configs, the CLI in-process."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from overfit import cli, config


def all_runs(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=10_000) if experiments else []


def compose(*overrides: str) -> DictConfig:
    """The config ``overfit train OVERRIDES`` would run (validated)."""
    return config.compose_jobs(list(overrides), multirun=False)[0]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``overfit ARGS`` in this process; returns (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # Hydra reports some errors by exiting
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
