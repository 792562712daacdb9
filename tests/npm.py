"""Packages from the npm registry for the tests that drive the gateway from Node or check a
document against a published schema; installed once into ``.cache/npm`` (git-ignored)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "npm"


def npm_package(spec: str) -> Path:
    """The directory of npm package ``spec`` (``name@version``), installed if missing."""
    name = spec.rsplit("@", 1)[0]
    directory = CACHE / "node_modules" / name
    if not (directory / "package.json").exists():
        npm = shutil.which("npm")
        assert npm, "Node and npm are on every machine"
        subprocess.run(
            [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--silent", spec],
            check=True, timeout=300, capture_output=True,
        )  # fmt: skip
    return directory


def node_script(name: str, *packages: str) -> Path:
    """``tests/node/<name>`` ready to run with ``node``: it and the scripts it imports are
    copied beside the ``node_modules`` holding ``packages``, so their imports resolve there."""
    for spec in packages:
        npm_package(spec)
    for script in (Path(__file__).resolve().parent / "node").glob("*.mjs"):
        shutil.copyfile(script, CACHE / script.name)
    return CACHE / name
