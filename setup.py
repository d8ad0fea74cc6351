"""Build step that pyproject.toml cannot express: copy the deployment files
(packs, deploy/, docs/, the example config, LICENSE, CHANGELOG.md, README.md)
into ``alert_service/_bundle/`` of the built package, for
``tracked-connections-alerts init DIR``. All metadata lives in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DIRS = ("packs", "deploy", "docs")
FILES = ("examples/alerts.example.yaml", "LICENSE", "CHANGELOG.md", "README.md")


class BuildWithBundle(build_py):
    def run(self) -> None:
        super().run()
        bundle = Path(self.build_lib) / "alert_service" / "_bundle"
        for name in DIRS:
            shutil.copytree(ROOT / name, bundle / name, dirs_exist_ok=True)
        for name in FILES:
            (bundle / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, bundle / name)


setup(cmdclass={"build_py": BuildWithBundle})
