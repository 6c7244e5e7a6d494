"""The fingerprint of the code that computes results: part of the reuse key.

A finished run is reused only when both its config hash and this fingerprint
match, so editing a loss formula retrains while editing the report or the
README does not. It covers the packages whose code turns a config into numbers
(``maths``, ``data``, ``training``) and the versions of the libraries that do the
arithmetic.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # src/overfit
RESULT_PACKAGES = ("maths", "data", "training")
LIBRARIES = ("torch", "lightning", "numpy", "scikit-learn")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def code_fingerprint() -> str:
    """16 hex digits over the result-computing sources (path and bytes) and the numeric libraries' versions."""
    return _fingerprint(PACKAGE)


@cache
def _fingerprint(package: Path) -> str:
    digest = hashlib.sha256()
    for sub in RESULT_PACKAGES:
        for file in sorted((package / sub).rglob("*.py")):
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(b"\0")
            digest.update(file.read_bytes())
    for name in LIBRARIES:
        digest.update(f"{name}=={_version(name)}".encode())
    return digest.hexdigest()[:16]
