"""Test helpers: the store's runs, composed configs, the CLI in-process."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from overfit import cli
from overfit.compose import compose_jobs


def all_runs(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=10_000) if experiments else []


def compose(*overrides: str) -> DictConfig:
    """The config ``overfit train OVERRIDES`` would run (validated)."""
    return compose_jobs(list(overrides), multirun=False)[0]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``overfit ARGS`` in this process; returns (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # Hydra reports some errors by exiting
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def parent_of(out: str) -> str:
    """The sweep's parent run id from what ``overfit train -m`` printed."""
    import re

    found = re.findall(r"\[overfit\] sweep ([0-9a-f]{32}):", out)
    assert found, out
    return found[-1]
