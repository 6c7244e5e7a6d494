"""``overfit train`` is a plain Hydra app: each flag prints what a bare ``@hydra.main`` app on the same config prints.

The reference is the smallest app Hydra documents, on ``pkg://overfit.conf``; both run in
fresh processes with the same environment, and their outputs are compared after the one
thing that must differ (the program's name).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PLAIN = '''import hydra


@hydra.main(version_base="1.3", config_path="pkg://overfit.conf", config_name="train")
def main(cfg):
    print("the task ran")


if __name__ == "__main__":
    main()
'''

FLAGS = [
    ["--help"],
    ["--hydra-help"],
    ["--cfg", "job"],
    ["--cfg", "hydra"],
    ["--cfg", "all"],
    ["--cfg", "job", "--resolve", "dataset=digits", "model=mlp"],
    ["--cfg", "job", "--package", "optimizer"],
    ["--info", "config"],
    ["--info", "defaults"],
    ["--info", "defaults-tree"],
    ["--info", "searchpath"],
    ["--info", "plugins"],
    ["-sc", "install=bash"],
    ["--config-dir", "{own}", "--cfg", "job", "dataset=rings"],
    ["--config-dir", "{own}", "--config-name", "mine", "--cfg", "job"],
]


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    where = tmp_path_factory.mktemp("plain")
    (where / "plain.py").write_text(PLAIN)
    own = where / "own"
    (own / "dataset").mkdir(parents=True)
    (own / "dataset" / "rings.yaml").write_text("_target_: my_pkg.rings\nn: 200\n")
    (own / "mine.yaml").write_text("defaults:\n  - train\n  - _self_\nseed: 7\n")
    env = {**os.environ, "OVERFIT_ROOT": str(where), "MLFLOW_TRACKING_URI": f"sqlite:///{where / 'db'}"}
    return where, env


def normal(text: str) -> str:
    """Outputs with the program's name and the clock taken out: all that may differ between the two apps."""
    text = re.sub(r"python \S*plain\.py|\S*plain\.py|overfit-train|overfit train", "PROG", text)
    text = re.sub(r"(complete -p |-F hydra_bash_completion )\S+", r"\1PROG", text)  # the command completed
    text = text.split("Profiling information")[0]  # --info plugins: import times, ordered by them
    return re.sub(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-\d+", "TIME", text)


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: " ".join(f))
def test_each_flag_prints_what_a_plain_hydra_app_prints(flags: list[str], setting) -> None:
    where, env = setting
    flags = [f.replace("{own}", str(where / "own")) for f in flags]
    plain = subprocess.run([sys.executable, "plain.py", *flags], cwd=where, env=env, capture_output=True, text=True,
                           timeout=120)
    ours = subprocess.run([sys.executable, "-m", "overfit", "train", *flags], cwd=where, env=env,
                          capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert ours.returncode == plain.returncode, ours.stderr[-2000:]
    assert normal(ours.stdout) == normal(plain.stdout)
    assert "the task ran" not in plain.stdout  # an informational flag runs nothing


def test_the_app_is_also_its_own_command(setting) -> None:
    where, env = setting
    direct = subprocess.run([str(Path(sys.executable).with_name("overfit-train")), "--cfg", "job"], cwd=where,
                            env=env, capture_output=True, text=True, timeout=120)
    via = subprocess.run([sys.executable, "-m", "overfit", "train", "--cfg", "job"], cwd=where, env=env,
                         capture_output=True, text=True, timeout=120)
    assert direct.returncode == 0 and direct.stdout == via.stdout


def test_hydras_own_basic_sweeper_gets_a_parent_too(root: Path, store, capsys) -> None:
    from helpers import all_runs, run_cli
    from overfit.tracking import runs

    code, out, err = run_cli(capsys, "train", "-m", "hydra/sweeper=basic", "features=polynomial",
                             "features.order=1,2", "trainer.max_epochs=5")
    assert code == 0, err
    found = all_runs(store)
    (parent,) = [r for r in found if r.data.tags.get(runs.TAG_KIND) == "sweep"]
    kids = [r for r in found if r.data.tags.get(runs.TAG_PARENT) == parent.info.run_id]
    assert sorted(k.info.run_name for k in kids) == ["features.order=1", "features.order=2"]
    assert "2 points finished" in out
