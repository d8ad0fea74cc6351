"""``tracked-connections-install-extension``: install the extension for osqueryd's autoload.

osqueryd autoloads the files listed in ``--extensions_autoload`` (Linux default
``/etc/osquery/extensions.load``) only when each one passes its safety checks
(osquery-protocol-and-logs.md §2 "Autoload"; upstream
osquery/extensions/extensions.cpp ``isFileSafe``,
osquery/filesystem/posix/fileops.cpp ``safePermissions``):

* the path exists and is not a directory, and its name ends in ``.ext``;
* its parent directory does not have the sticky bit (``/tmp``-like directories are
  refused);
* it is owned by root or by the user osqueryd runs as;
* it is owner-executable (``S_IXUSR``) and not world-writable (``S_IWOTH``).

A failing file is skipped with a warning such as ``Will not autoload extension with
unsafe directory permissions: PATH`` or ``Will not autoload extension not ending in
'.ext': PATH``. osqueryd then execs the file as ``PATH [--verbose] --socket S
--timeout T --interval I``.

This command writes a small ``sh`` launcher that satisfies those rules and execs the
Python that has this package installed::

    #!/bin/sh
    exec '/opt/tc/venv/bin/python' -P -m extension "$@"

``-P`` keeps the working directory off ``sys.path``, so a directory named
``extension`` wherever osqueryd happens to run cannot shadow the package.

Usage::

    tracked-connections-install-extension [--dir DIR] [--name NAME.ext]
        [--python PATH] [--extensions-load FILE]
    tracked-connections-install-extension --check PATH [--extensions-load FILE]

Exit status: 0 installed (or ``--check`` found nothing wrong), 1 refused or a
problem found (one line per problem on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_EXTENSIONS_LOAD",
    "DEFAULT_NAME",
    "InstallError",
    "InstallResult",
    "add_to_autoload",
    "autoload_lines",
    "autoload_problems",
    "build_parser",
    "install",
    "launcher_script",
    "main",
]

DEFAULT_DIR: Final = "/usr/local/osquery_extensions"
DEFAULT_NAME: Final = "tracked_connections.ext"
DEFAULT_EXTENSIONS_LOAD: Final = "/etc/osquery/extensions.load"
LAUNCHER_MODE: Final = 0o755
_DIR_MODE: Final = 0o755
_LOAD_FILE_MODE: Final = 0o644
_CHECK_TIMEOUT_SECS: Final = 60.0


class InstallError(Exception):
    """The launcher cannot be installed where asked; the message says why."""


@dataclass(frozen=True, slots=True)
class InstallResult:
    """What :func:`install` did.

    Attributes:
        launcher: absolute path of the written ``.ext`` file.
        python: the interpreter the launcher execs.
        autoload_file: the extensions.load file updated, or None.
        autoload_added: True when the launcher's line was appended to it (False when
            it was already listed or no file was given).
        warnings: things osqueryd may still object to (e.g. not owned by root).
    """

    launcher: Path
    python: str
    autoload_file: Path | None = None
    autoload_added: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)


def launcher_script(python: str) -> str:
    """Return the launcher's text: a ``sh`` script exec'ing ``python -P -m extension``.

    Args:
        python: absolute path of the interpreter; quoted for ``sh``.
    """
    return (
        "#!/bin/sh\n"
        "# tracked-connections osquery extension launcher, written by\n"
        "# tracked-connections-install-extension. osqueryd runs it as\n"
        "#   <this file> [--verbose] --socket PATH --timeout SECS --interval SECS\n"
        f'exec {shlex.quote(python)} -P -m extension "$@"\n'
    )


def autoload_problems(
    path: str | os.PathLike[str], allowed_uids: Iterable[int] = (0,)
) -> list[str]:
    """Check ``path`` against osqueryd's autoload rules.

    Args:
        path: the extension file as listed in extensions.load.
        allowed_uids: owners osqueryd accepts: root (0) and the uid osqueryd runs as.

    Returns:
        One line per broken rule, worded after what osqueryd checks; empty when the
        file would be autoloaded.
    """
    file = Path(path)
    try:
        st = file.stat()
    except OSError as err:
        return [f"{file}: cannot be read: {err.strerror or err}"]
    problems: list[str] = []
    if stat.S_ISDIR(st.st_mode):
        return [f"{file}: is a directory, osqueryd autoloads files only"]
    if file.suffix != ".ext":
        problems.append(f"{file}: name does not end in '.ext'")
    try:
        parent = file.parent.stat()
    except OSError as err:
        problems.append(f"{file.parent}: cannot be read: {err.strerror or err}")
    else:
        if parent.st_mode & stat.S_ISVTX:
            problems.append(
                f"{file.parent}: directory has the sticky bit (like /tmp); osqueryd refuses it"
            )
    uids = sorted(set(allowed_uids))
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in uids:
        owners = " or ".join(map(str, uids))
        problems.append(f"{file}: owned by uid {st.st_uid}, not by uid {owners}")
    if not st.st_mode & stat.S_IXUSR:
        problems.append(f"{file}: not executable by its owner (mode {mode:04o})")
    if st.st_mode & stat.S_IWOTH:
        problems.append(f"{file}: world-writable (mode {mode:04o})")
    return problems


def autoload_lines(text: str) -> list[str]:
    """Return the paths an extensions.load text lists, as osqueryd reads them.

    Lines are trimmed; blank lines and lines starting with ``#`` or ``;`` are skipped.
    """
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            out.append(line)
    return out


def add_to_autoload(load_file: str | os.PathLike[str], launcher: str | os.PathLike[str]) -> bool:
    """Append ``launcher`` to ``load_file`` unless it is already listed.

    The file (and its directory) is created when missing, mode 0644; other lines are
    kept as they are. A directory line that contains the launcher counts as listed.

    Returns:
        True when a line was appended.

    Raises:
        InstallError: the file cannot be read or written.
    """
    load = Path(load_file)
    target = Path(launcher)
    try:
        text = load.read_text(encoding="utf-8") if load.exists() else ""
    except (OSError, UnicodeDecodeError) as err:
        raise InstallError(f"cannot read {load}: {err}") from err
    for line in autoload_lines(text):
        listed = Path(line)
        if listed == target or (listed.is_dir() and target.parent == listed):
            return False
    addition = ("" if not text or text.endswith("\n") else "\n") + f"{target}\n"
    try:
        load.parent.mkdir(parents=True, exist_ok=True)
        created = not load.exists()
        with load.open("a", encoding="utf-8") as fh:
            fh.write(addition)
        if created:
            load.chmod(_LOAD_FILE_MODE)
    except OSError as err:
        raise InstallError(f"cannot write {load}: {err.strerror or err}") from err
    return True


def _resolve_python(python: str) -> str:
    """Absolute interpreter path (symlinks kept: a venv's python must stay a venv's)."""
    if os.sep in python:
        candidate = os.path.abspath(python)
    else:
        found = shutil.which(python)
        if found is None:
            raise InstallError(f"--python {python!r}: not found on PATH")
        candidate = os.path.abspath(found)
    if not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
        raise InstallError(f"--python {candidate}: not an executable file")
    return candidate


def _check_python(python: str) -> None:
    """Run ``python -P -c 'import extension.cli'`` the way the launcher will."""
    try:
        done = subprocess.run(
            [python, "-P", "-c", "import extension.cli"],
            capture_output=True,
            text=True,
            timeout=_CHECK_TIMEOUT_SECS,
            cwd="/",
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise InstallError(f"--python {python}: cannot run it: {err}") from err
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InstallError(
            f"--python {python} cannot import the extension package ({last}); "
            "install tracked-connections into that Python first"
        )


def _prepare_dir(directory: Path) -> list[str]:
    warnings: list[str] = []
    if not directory.exists():
        try:
            directory.mkdir(parents=True, mode=_DIR_MODE)
            directory.chmod(_DIR_MODE)  # mkdir's mode is filtered by the umask
        except OSError as err:
            raise InstallError(f"cannot create {directory}: {err.strerror or err}") from err
    if not directory.is_dir():
        raise InstallError(f"{directory} is not a directory")
    mode = directory.stat().st_mode
    if mode & stat.S_ISVTX:
        raise InstallError(
            f"refusing to install into {directory}: the directory has the sticky bit "
            "(like /tmp), and osqueryd will not autoload extensions from it; "
            f"use a directory such as {DEFAULT_DIR}"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        warnings.append(
            f"{directory} is writable by group or others (mode {stat.S_IMODE(mode):04o}): "
            "anyone who can write there can replace what osqueryd runs as root"
        )
    return warnings


def install(
    directory: str | os.PathLike[str] = DEFAULT_DIR,
    *,
    name: str = DEFAULT_NAME,
    python: str | None = None,
    extensions_load: str | os.PathLike[str] | None = None,
    check_python: bool = True,
) -> InstallResult:
    """Write the launcher ``directory/name`` and optionally list it in extensions.load.

    The file is written to a temporary name in the same directory, given mode 0755
    (and owner root:root when running as root), then renamed over any previous one, so
    osqueryd never sees a half-written launcher.

    Args:
        directory: where to put the launcher; created (0755) when missing.
        name: file name; must end in ``.ext``.
        python: interpreter with this package installed (default: the running one).
        extensions_load: extensions.load file to append the launcher's path to.
        check_python: verify first that ``python -P -c 'import extension.cli'`` works.

    Returns:
        What was written, with warnings (e.g. owner is not root).

    Raises:
        InstallError: bad name, sticky or unusable directory, Python without the
            package, or files that cannot be written.
    """
    if not name.endswith(".ext") or "/" in name or name == ".ext":
        raise InstallError(f"--name {name!r}: osqueryd autoloads only file names ending in .ext")
    interpreter = _resolve_python(python if python is not None else sys.executable)
    if check_python:
        _check_python(interpreter)
    folder = Path(os.path.abspath(directory))
    warnings = _prepare_dir(folder)
    launcher = folder / name
    euid = os.geteuid()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(launcher_script(interpreter))
        os.chmod(tmp_name, LAUNCHER_MODE)
        if euid == 0:
            os.chown(tmp_name, 0, 0)
        os.replace(tmp_name, launcher)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise InstallError(f"cannot write {launcher}: {err.strerror or err}") from err
    if euid != 0:
        warnings.append(
            f"not running as root: {launcher} is owned by uid {euid}; osqueryd autoloads it "
            "only when osqueryd runs as that user (run this command as root for a "
            "root-run osqueryd)"
        )
    problems = autoload_problems(launcher, allowed_uids=(0, euid))
    if problems:
        raise InstallError("the written launcher would not be autoloaded: " + "; ".join(problems))
    added = False
    load_path: Path | None = None
    if extensions_load is not None:
        load_path = Path(os.path.abspath(extensions_load))
        added = add_to_autoload(load_path, launcher)
    return InstallResult(launcher, interpreter, load_path, added, tuple(warnings))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tracked-connections-install-extension``."""
    parser = argparse.ArgumentParser(
        prog="tracked-connections-install-extension",
        description="Write an osquery autoload launcher (.ext) for the tracked_connections "
        "extension, or --check an existing one against osqueryd's autoload rules.",
    )
    parser.add_argument(
        "--dir", default=DEFAULT_DIR, help=f"directory of the launcher (default {DEFAULT_DIR})"
    )
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"launcher file name (default {DEFAULT_NAME})"
    )
    parser.add_argument(
        "--python",
        default=None,
        help="Python with tracked-connections installed (default: the one running this)",
    )
    parser.add_argument(
        "--extensions-load",
        metavar="FILE",
        default=None,
        help="also list the launcher in this autoload file, once "
        f"(osqueryd's default is {DEFAULT_EXTENSIONS_LOAD})",
    )
    parser.add_argument(
        "--check",
        metavar="PATH",
        default=None,
        help="only check PATH (and --extensions-load, if given) against the autoload rules",
    )
    parser.add_argument(
        "--osqueryd-uid",
        type=int,
        default=0,
        help="uid osqueryd runs as, for --check (default 0, root)",
    )
    return parser


def _check(args: argparse.Namespace) -> int:
    problems = autoload_problems(args.check, allowed_uids=(0, args.osqueryd_uid))
    if args.extensions_load is not None:
        load = Path(args.extensions_load)
        try:
            listed = [Path(p) for p in autoload_lines(load.read_text(encoding="utf-8"))]
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"{load}: cannot be read: {err}")
        else:
            target = Path(os.path.abspath(args.check))
            if not any(p == target or (p.is_dir() and p == target.parent) for p in listed):
                problems.append(f"{load}: does not list {target}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"OK: osqueryd would autoload {args.check}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (see the module docs for options and exit status)."""
    args = build_parser().parse_args(argv)
    if args.check is not None:
        return _check(args)
    try:
        result = install(
            args.dir, name=args.name, python=args.python, extensions_load=args.extensions_load
        )
    except InstallError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {result.launcher} (mode 0755) -> {result.python} -P -m extension")
    if result.autoload_file is not None:
        state = "added to" if result.autoload_added else "already listed in"
        print(f"{state} {result.autoload_file}")
    else:
        print(
            f"list it in osqueryd's autoload file: "
            f"echo {result.launcher} >> {DEFAULT_EXTENSIONS_LOAD}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
