"""A study of one's own: a dataset, model, loss and optimizer in a folder and module outside the package.

The README's own example is run as written (its files and its command, from the section
"Your own study"), then variants: a batchable option trains vectorized, a plain callable
trains one point at a time and says why, an optimizer of one's own never steps as another.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import all_runs
from overfit.tracking import runs

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> tuple[dict[str, str], str]:
    """The files (``# path`` on their first line) and the command of the README's own-study section."""
    text = README.read_text()
    section = text[text.index("## Your own study"):]
    section = section[: section.index("\n## ", 5)]
    files, command = {}, ""
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        first, _, rest = body.partition("\n")
        if lang == "bash":
            command = body.replace("\\\n", " ").strip()
        elif first.startswith("# "):
            files[first[2:].strip()] = rest if lang == "yaml" else body
    return files, command


def study(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The README's files written under tmp_path; the environment that runs overfit there."""
    files, _ = readme_example()
    for name, body in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    (tmp_path / "my_pkg" / "__init__.py").touch()
    env = {**os.environ, "OVERFIT_ROOT": str(tmp_path), "PYTHONPATH": str(tmp_path),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return files, env


def overfit(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "overfit", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def store(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    files, env = study(tmp_path)
    _, command = readme_example()
    assert set(files) == {"my_pkg/rings.py", "my_conf/dataset/rings.yaml", "my_conf/model/tiny.yaml"}
    shown = [a for a in command.split() if not a.startswith("PYTHONPATH=")]
    assert shown[:2] == ["overfit", "train"]
    done = overfit(tmp_path, env, *shown[1:])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "one at a time: net declares no batched form" in done.stdout
    found = all_runs(store(tmp_path))
    (parent,) = [r for r in found if r.data.tags.get(runs.TAG_KIND) == "sweep"]
    kids = [r for r in found if r.data.tags.get(runs.TAG_PARENT) == parent.info.run_id]
    assert len(kids) == 4 and all(k.info.status == "FINISHED" for k in kids)
    accuracy = {(k.data.params["model.width"], k.data.params["dataset.noise"]): k.data.metrics["test/acc"]
                for k in kids}
    assert set(accuracy) == {("2", "0.1"), ("2", "0.3"), ("32", "0.1"), ("32", "0.3")}
    assert all(k.data.tags["dataset"] == "rings" and k.data.tags["model"] == "tiny" for k in kids)
    assert accuracy["32", "0.1"] > 0.95 and accuracy["32", "0.1"] > accuracy["2", "0.1"]  # capacity it needs
    report = {a.path for a in store(tmp_path).list_artifacts(parent.info.run_id, "report")}
    assert "report/summary.csv" in report and any(p.startswith("report/curves_") for p in report)


def test_a_dataset_of_ones_own_with_a_shipped_model_trains_vectorized(tmp_path: Path) -> None:
    _, env = study(tmp_path)
    done = overfit(tmp_path, env, "train", "-m", "--config-dir", "my_conf", "dataset=rings", "model=mlp",
                   "model.hidden=[8]", "loss=log_likelihood", "optimizer=sgd", "optimizer.lr=0.05,0.2",
                   "dataset.noise=0.1,0.3", "trainer.max_epochs=20")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vectorized: 4 points in 1 job(s)" in done.stdout


def test_bad_keys_of_ones_own_component_are_one_line(tmp_path: Path) -> None:
    _, env = study(tmp_path)
    done = overfit(tmp_path, env, "train", "--config-dir", "my_conf", "dataset=rings", "model=tiny",
                   "loss=log_likelihood", "+model.depth=3")
    assert done.returncode == 2
    assert done.stderr.strip() == "overfit: error: model.depth: no such key for my_pkg.rings.net " \
                                  "(allowed: in_features, out_features, width)"
    done = overfit(tmp_path, env, "train", "--config-dir", "my_conf", "dataset=rings", "model=tiny",
                   "loss=log_likelihood", "model.width=wide")
    assert done.returncode == 2 and "model.width: got 'wide' (allowed: an integer)" in done.stderr
    assert not (tmp_path / "mlflow.db").exists() or all_runs(store(tmp_path)) == []


MY_OPTIMIZER = '''
from overfit.training.optimizers import SGD


class ClippedSGD(SGD):
    """SGD whose steps are clipped: its own update, so it must never step as plain SGD in a batched group."""

    def __init__(self, lr: float = 0.1, clip: float = 1.0, batch_size: int | None = None) -> None:
        super().__init__(lr, batch_size)
        self.clip = clip

    def build(self, params):
        import torch

        class Clipped(torch.optim.SGD):
            def step(inner, closure=None):
                for group in inner.param_groups:
                    torch.nn.utils.clip_grad_norm_(group["params"], self.clip)
                return super().step(closure)

        return Clipped(params, lr=self.lr)
'''


@pytest.mark.parametrize("target", ["my_pkg.optim.ClippedSGD", "torch.optim.RMSprop"])
def test_an_optimizer_of_ones_own_never_trains_as_another(target: str, tmp_path: Path) -> None:
    _, env = study(tmp_path)
    (tmp_path / "my_pkg" / "optim.py").write_text(MY_OPTIMIZER)
    (tmp_path / "my_conf" / "optimizer").mkdir(parents=True)
    (tmp_path / "my_conf" / "optimizer" / "mine.yaml").write_text(f"_target_: {target}\nlr: 0.05\n"
                                                                  "batch_size: null\n")
    done = overfit(tmp_path, env, "train", "-m", "--config-dir", "my_conf", "optimizer=mine", "dataset=polynomial",
                   "features=polynomial", "features.order=2,3", "trainer.max_epochs=5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vectorized" not in done.stdout and "one at a time" in done.stdout and "no batched form" in done.stdout
    kids = [r for r in all_runs(store(tmp_path)) if r.data.tags.get(runs.TAG_KIND) == "point"]
    assert len(kids) == 2 and all(k.data.tags["optimizer"] == "mine" for k in kids)
    for kid in kids:  # the callable that trained it is in its config (the reuse key's), not a param column
        config = store(tmp_path).download_artifacts(kid.info.run_id, "config.yaml", str(tmp_path))
        assert f"_target_: {target}" in Path(config).read_text()


STUDY = """name: rings_width
description: How wide a network two rings need.
experiment: rings
overrides: [dataset=rings, model=tiny, loss=log_likelihood, optimizer.lr=0.02, trainer.max_epochs=20]
stages:
  widths: {kind: sweep, axes: {model.width: [2, 32]}}
  best: {kind: select, needs: [widths]}
"""


def test_a_pipeline_finds_ones_own_options(tmp_path: Path) -> None:
    _, env = study(tmp_path)
    (tmp_path / "rings_width.yaml").write_text(STUDY)
    shown = overfit(tmp_path, env, "pipeline", "show", "rings_width.yaml", "--config-dir", "my_conf")
    assert shown.returncode == 0, shown.stderr[-3000:]
    done = overfit(tmp_path, env, "pipeline", "run", "rings_width.yaml", "--config-dir", "my_conf")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'best' (select): model.width=32" in done.stdout
    missing = overfit(tmp_path, env, "pipeline", "show", "rings_width.yaml")
    assert missing.returncode == 2 and "unknown option 'tiny'" in missing.stderr and "rings_width.yaml:4" in missing.stderr
