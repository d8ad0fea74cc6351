"""``tracked-connections-install-extension``: install the extension for osqueryd's autoload.

osqueryd autoloads the files listed in ``--extensions_autoload`` (Linux default
``/etc/osquery/extensions.load``) only when each one passes its safety checks
(upstream osquery 5.23, osquery/extensions/extensions.cpp ``isFileSafe``,
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

osquery checks the launcher, but nothing in osquery checks what the launcher runs:
the interpreter, the virtual environment and every directory on its ``sys.path``
run as root. This command therefore also checks them (:func:`interpreter_problems`):
each file and directory of the interpreter's symlink chain, of ``sys.prefix`` and of
every ``sys.path`` entry, and every ancestor directory of those, must be owned by root
(or osqueryd's user) and not writable by group or others. A world-writable ancestor
with the sticky bit (``/tmp``) is accepted: nobody else can rename or delete the
root-owned entry inside it. Anyone who could write one of those files could run code
as root the next time osqueryd starts the extension, so ``install`` refuses such an
interpreter unless ``--force`` is given, and ``--check`` reports it.

Usage::

    tracked-connections-install-extension [--dir DIR] [--name NAME.ext]
        [--python PATH] [--extensions-load FILE] [--osqueryd-uid UID] [--force]
    tracked-connections-install-extension --check PATH [--extensions-load FILE]
        [--osqueryd-uid UID]

Exit status: 0 installed (or ``--check`` found nothing wrong), 1 refused or a
problem found (one line per problem on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

from extension import __version__

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
    "interpreter_problems",
    "launcher_interpreter",
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
_MAX_SYMLINKS: Final = 40
_MAX_PROBLEMS_PER_ROOT: Final = 5
# Run by the interpreter being installed (``-P``, cwd "/"): imports the package the
# launcher will run and reports where that interpreter loads code from.
_PROBE: Final = (
    "import json, sys\n"
    "import extension.cli, extension\n"
    "print(json.dumps({'prefix': sys.prefix, 'path': sys.path,"
    " 'package': list(extension.__path__)}))\n"
)


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


@dataclass(frozen=True, slots=True)
class _Probe:
    """Where an interpreter loads code from: ``sys.prefix``, ``sys.path``, the package."""

    prefix: str
    path: tuple[str, ...]
    package: tuple[str, ...]


def _probe_python(python: str) -> _Probe:
    """Run :data:`_PROBE` with ``python -P`` the way the launcher will run the package.

    Raises:
        InstallError: the interpreter cannot run, cannot import the extension package,
            or prints something that is not the probe's JSON.
    """
    try:
        done = subprocess.run(
            [python, "-P", "-c", _PROBE],
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
    try:
        raw = json.loads(done.stdout.strip().splitlines()[-1])
        return _Probe(
            str(raw["prefix"]),
            tuple(str(p) for p in raw["path"]),
            tuple(str(p) for p in raw["package"]),
        )
    except (IndexError, KeyError, TypeError, ValueError) as err:
        raise InstallError(f"--python {python}: unexpected answer to the probe: {err}") from err


def _entry_problem(path: str, st: os.stat_result, allowed_uids: frozenset[int]) -> str | None:
    """Why ``path`` (with stat ``st``) could be changed by someone other than root."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in allowed_uids:
        owners = " or ".join(str(u) for u in sorted(allowed_uids))
        return f"{path}: owned by uid {st.st_uid}, not by uid {owners}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path}: writable by group or others (mode {mode:04o})"
    return None


def _ancestor_problems(path: str, allowed_uids: frozenset[int]) -> list[str]:
    """Problems of the directories above ``path`` (as written and resolved), up to ``/``.

    A directory with the sticky bit passes even when world-writable: only the owner of
    an entry may rename or delete it there, and the entry below is checked itself.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for start in (os.path.abspath(path), os.path.realpath(path)):
        for parent in Path(start).parents:
            name = str(parent)
            if name in seen:
                continue
            seen.add(name)
            try:
                st = os.stat(name)
            except OSError as err:
                problems.append(f"{name}: cannot be read: {err.strerror or err}")
                continue
            if st.st_mode & stat.S_ISVTX and st.st_uid in allowed_uids:
                continue
            problem = _entry_problem(name, st, allowed_uids)
            if problem is not None:
                problems.append(problem)
    return problems


def _symlink_chain(path: str) -> list[str]:
    """``path`` and every name its symlinks lead through, the final file last."""
    chain = [os.path.abspath(path)]
    while os.path.islink(chain[-1]) and len(chain) <= _MAX_SYMLINKS:
        target = os.readlink(chain[-1])
        chain.append(os.path.normpath(os.path.join(os.path.dirname(chain[-1]), target)))
    return chain


def _tree_problems(root: str, allowed_uids: frozenset[int]) -> list[str]:
    """Problems of ``root`` and everything below it (symlinks: their targets).

    At most :data:`_MAX_PROBLEMS_PER_ROOT` lines are kept, then a count of the rest.
    """
    problems: list[str] = []
    more = 0

    def note(name: str, st: os.stat_result | None = None) -> None:
        nonlocal more
        if st is None:
            try:
                st = os.stat(name)  # a symlink counts as what it points at
            except OSError:
                return  # a dangling link runs nothing
        problem = _entry_problem(name, st, allowed_uids)
        if problem is None:
            return
        if len(problems) < _MAX_PROBLEMS_PER_ROOT:
            problems.append(problem)
        else:
            more += 1

    note(root)
    stack = [root] if os.path.isdir(root) and not os.path.islink(root) else []
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # vanished or unreadable: nothing there is run
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                note(entry.path)  # the target
            else:
                note(entry.path, st)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    if more:
        problems.append(f"{root}: {more} more entries writable by others or not root's")
    return problems


def interpreter_problems(
    python: str, allowed_uids: Iterable[int] = (0,), *, run: bool = True
) -> list[str]:
    """Check that nobody but root (or osqueryd's user) can change what ``python`` runs.

    Checked, each with its ancestor directories: every name of the interpreter's
    symlink chain; then (``run`` true, the interpreter passing so far) ``sys.prefix``,
    every existing ``sys.path`` entry and the ``extension`` package directory as
    reported by the interpreter itself, walked recursively. Owned by an uid outside
    ``allowed_uids``, or writable by group or others, is a problem.

    Args:
        python: the interpreter the launcher execs.
        allowed_uids: acceptable owners: root (0) and the uid osqueryd runs as.
        run: also run ``python -P`` to learn its ``sys.path`` (the installer already
            runs it to check the import).

    Returns:
        One line per problem; empty when the interpreter is safe to run as root.

    Raises:
        InstallError: ``run`` and the interpreter cannot import the package.
    """
    uids = frozenset(allowed_uids)
    problems = _chain_problems(python, uids)
    if problems or not run:
        # Do not run an interpreter that someone else may have replaced.
        return problems
    return _probe_problems(_probe_python(python), uids)


def _chain_problems(python: str, uids: frozenset[int]) -> list[str]:
    """Problems of the interpreter's symlink chain and its ancestors (nothing is run)."""
    problems: list[str] = []
    for name in _symlink_chain(python):
        problems += _ancestor_problems(name, uids)
        try:
            st = os.lstat(name)
        except OSError as err:
            problems.append(f"{name}: cannot be read: {err.strerror or err}")
            continue
        if not stat.S_ISLNK(st.st_mode):
            problem = _entry_problem(name, st, uids)
            if problem is not None:
                problems.append(problem)
    return list(dict.fromkeys(problems))


def _probe_problems(probe: _Probe, uids: frozenset[int]) -> list[str]:
    """Problems of ``sys.prefix``, ``sys.path`` and the package, trees and ancestors."""
    problems: list[str] = []
    found = sorted(
        {
            os.path.abspath(r)
            for r in (probe.prefix, *probe.path, *probe.package)
            if r and os.path.exists(r)
        }
    )
    roots: list[str] = []
    for root in found:  # sorted: a directory comes before what is inside it
        if not any(root.startswith(outer.rstrip("/") + "/") for outer in roots):
            roots.append(root)
    for root in roots:
        problems += _ancestor_problems(root, uids)
        problems += _tree_problems(root, uids)
    return list(dict.fromkeys(problems))


def launcher_interpreter(launcher: str | os.PathLike[str]) -> str | None:
    """The interpreter a launcher written by :func:`launcher_script` execs, or None."""
    try:
        text = Path(launcher).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        if line.startswith("exec "):
            try:
                words = shlex.split(line)
            except ValueError:
                return None
            if len(words) > 1 and words[2:4] == ["-P", "-m"]:
                return words[1]
    return None


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
    osqueryd_uid: int = 0,
    force: bool = False,
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
        check_python: verify first that ``python -P -c 'import extension.cli'`` works,
            and check what that interpreter loads code from (its symlink chain is
            checked in any case).
        osqueryd_uid: the uid osqueryd runs as; it may own the interpreter's files too.
        force: install even when :func:`interpreter_problems` finds some; they are
            returned as warnings instead.

    Returns:
        What was written, with warnings (e.g. owner is not root).

    Raises:
        InstallError: bad name, sticky or unusable directory, Python without the
            package, an interpreter others could change (unless ``force``), or files
            that cannot be written.
    """
    if not name.endswith(".ext") or "/" in name or name == ".ext":
        raise InstallError(f"--name {name!r}: osqueryd autoloads only file names ending in .ext")
    interpreter = _resolve_python(python if python is not None else sys.executable)
    uids = frozenset((0, osqueryd_uid))
    unsafe = _chain_problems(interpreter, uids)
    if unsafe and not force:
        raise _unsafe_interpreter(interpreter, unsafe)
    if check_python:
        unsafe += _probe_problems(_probe_python(interpreter), uids)
        if unsafe and not force:
            raise _unsafe_interpreter(interpreter, unsafe)
    folder = Path(os.path.abspath(directory))
    warnings = [f"--force: {problem}" for problem in unsafe]
    warnings += _prepare_dir(folder)
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


def _unsafe_interpreter(python: str, problems: list[str]) -> InstallError:
    return InstallError(
        f"refusing {python}: osqueryd would run it as root, and others could change what "
        "it runs: " + "; ".join(problems) + " (fix the ownership and modes, e.g. "
        "chown -R root: and chmod -R go-w, or pass --force to install anyway)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tracked-connections-install-extension``."""
    parser = argparse.ArgumentParser(
        prog="tracked-connections-install-extension",
        description="Write an osquery autoload launcher (.ext) for the tracked_connections "
        "extension, or --check an existing one against osqueryd's autoload rules.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
        help="only check PATH (and --extensions-load, if given) against the autoload rules, "
        "and the Python it runs against the ownership and mode rules",
    )
    parser.add_argument(
        "--osqueryd-uid",
        type=int,
        default=0,
        help="uid osqueryd runs as (default 0, root); it may own the launcher and the "
        "interpreter's files",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="install even if the interpreter, its virtual environment or a directory on "
        "its sys.path is not owned by root or is writable by group or others",
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
    if os.path.isfile(args.check):
        python = launcher_interpreter(args.check)
        if python is None:
            problems.append(
                f"{args.check}: cannot tell which Python it runs (not a launcher written by "
                "this command), so its interpreter was not checked"
            )
        else:
            try:
                problems += interpreter_problems(python, (0, args.osqueryd_uid))
            except InstallError as err:
                problems.append(str(err))
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
            args.dir,
            name=args.name,
            python=args.python,
            extensions_load=args.extensions_load,
            osqueryd_uid=args.osqueryd_uid,
            force=args.force,
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
