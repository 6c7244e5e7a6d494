"""``python -m overfit`` is ``overfit``."""

from overfit.cli import main

raise SystemExit(main())
