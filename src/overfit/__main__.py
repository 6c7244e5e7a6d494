"""``python -m overfit`` is ``overfit``."""

from overfit.cli import run

if __name__ == "__main__":  # guarded: worker processes started with "spawn" import this module too
    run()
