"""The files a deployment needs, shipped inside the package, and ``init DIR``.

Shape: the wheel carries ``alert_service/_bundle/`` with the repository's layout
(``packs/``, ``deploy/``, ``examples/``, ``docs/``, ``LICENSE``, ``CHANGELOG.md``,
``README.md``), copied there at build time by ``setup.py``. In a source checkout
(or an editable install) the repository itself is the bundle.

:func:`write_bundle` copies it into a directory of the user's choice. Existing
files are never overwritten unless ``force``. In the written systemd unit,
``Documentation=`` is pointed at that directory, so the unit names the deploy
guide that was written beside it.

Errors: :class:`BundleError` (a file exists without ``force``, the bundle is
missing from the install, or the directory cannot be written), with the paths.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUNDLE_DIRS",
    "BUNDLE_FILES",
    "UNIT",
    "BundleError",
    "Written",
    "bundle_root",
    "write_bundle",
]

BUNDLE_DIRS = ("packs", "deploy", "docs")
BUNDLE_FILES = ("examples/alerts.example.yaml", "LICENSE", "CHANGELOG.md", "README.md")
UNIT = "deploy/tracked-connections-alerts.service"
_DOCS_URI = "Documentation=file:///usr/share/doc/tracked-connections/docs/deploy.md"


class BundleError(Exception):
    """The bundle cannot be written; the message names the paths."""


@dataclass(frozen=True)
class Written:
    """What :func:`write_bundle` did: paths relative to the target directory."""

    files: tuple[str, ...]
    overwritten: tuple[str, ...]


def bundle_root() -> Path:
    """Directory holding the bundle: the installed copy, else the source checkout.

    Raises:
        BundleError: neither exists (a broken install).
    """
    here = Path(__file__).resolve().parent
    for root in (here / "_bundle", here.parent):
        if (root / UNIT).is_file() and (root / "packs").is_dir():
            return root
    raise BundleError(f"the packaged files are missing from {here}; reinstall the package")


def _relative_files(root: Path) -> list[str]:
    names = [name for name in BUNDLE_FILES if (root / name).is_file()]
    for top in BUNDLE_DIRS:
        names += [
            str(path.relative_to(root))
            for path in sorted((root / top).rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts
        ]
    return sorted(names)


def _unit_text(text: str, target: Path) -> str:
    """The unit with ``Documentation=`` naming the deploy guide written under ``target``.

    Its other paths stay as docs/deploy.md installs them (/etc/tracked-connections).
    """
    return text.replace(_DOCS_URI, f"Documentation=file://{target}/docs/deploy.md")


def write_bundle(target: Path, *, force: bool = False) -> Written:
    """Copy the bundle into ``target`` (created if missing).

    Raises:
        BundleError: some files exist and ``force`` is false (nothing is written
            then, and every such file is named), or a file cannot be written.
    """
    root = bundle_root()
    target = target.resolve()
    names = _relative_files(root)
    existing = [name for name in names if (target / name).exists()]
    if existing and not force:
        listed = "\n  ".join(str(target / name) for name in existing)
        raise BundleError(
            f"refusing to overwrite {len(existing)} existing file(s) (use --force):\n  {listed}"
        )
    try:
        for name in names:
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if name == UNIT:
                text = (root / name).read_text(encoding="utf-8")
                dest.write_text(_unit_text(text, target), encoding="utf-8")
            else:
                shutil.copyfile(root / name, dest)
    except OSError as err:
        raise BundleError(f"cannot write {target}: {err}") from err
    return Written(tuple(names), tuple(existing))
