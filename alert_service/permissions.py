"""Warnings about files others may change: the config, ``{file:}`` secrets, IOC lists.

Whoever can write the configuration, a secret or an IOC list can redirect alerts,
steal the webhook's credentials or blind a rule, so such a file must be writable by its
owner only — and so must its directory, where another file could take its place. A
secret should also not be readable by others. :func:`loose_permissions` lists what is
not so; ``check-config`` prints it (``WARNING: ...`` on stderr, exit status unchanged)
and ``run`` logs it as ``file_permissions_loose`` at start.

Only POSIX mode bits are looked at (group/other write, other read for secrets; a
directory with the sticky bit, like ``/tmp``, lets others add files but not replace
this one, and a directory owned by root and writable by root only is fine).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator, Mapping
from typing import Any

from alert_service.config import Config
from alert_service.secret import Secret

__all__ = ["config_files", "loose_permissions"]


def _walk(value: Any) -> Iterator[Any]:
    """``value`` and everything inside it (dataclass fields, mappings, sequences)."""
    yield value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list | tuple | frozenset | set):
        for item in value:
            yield from _walk(item)


def config_files(config: Config) -> list[tuple[str, str]]:
    """``(kind, path)`` of every file the configuration trusts: ``config``, each
    ``{file:}`` secret (``secret``) and each IOC list, of addresses or of domains
    (``IOC list``), each once."""
    found: dict[str, str] = {}
    if config.file and not config.file.startswith("<"):
        found[os.path.abspath(config.file)] = "config"
    for notifier in config.notifiers:
        for value in _walk(notifier.options):
            if isinstance(value, Secret) and value.source.startswith("file:"):
                found.setdefault(value.source.removeprefix("file:"), "secret")
    for rule in config.rules:
        for value in _walk(rule):
            for name in ("include_files", "exclude_files", "domain_files"):
                paths = getattr(value, name, None)
                if isinstance(paths, tuple):
                    for path in paths:
                        if isinstance(path, str):
                            found.setdefault(path, "IOC list")
    return [(kind, path) for path, kind in found.items()]


def _mode(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


def loose_permissions(config: Config) -> list[str]:
    """One message per trusted file that others may change (or, for a secret, read).

    Files that cannot be stat'ed are skipped (loading the configuration reports them).
    """
    problems: list[str] = []
    for kind, path in config_files(config):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problems.append(
                f"{path}: {kind} is writable by "
                f"{'others' if st.st_mode & stat.S_IWOTH else 'its group'} "
                f"(mode {_mode(st.st_mode)}); run: chmod go-w {path}"
            )
        if kind == "secret" and st.st_mode & stat.S_IROTH:
            problems.append(
                f"{path}: secret is readable by others (mode {_mode(st.st_mode)}); "
                f"run: chmod o-rwx {path}"
            )
        directory = os.path.dirname(os.path.abspath(path))
        try:
            dst = os.stat(directory)
        except OSError:
            continue
        if dst.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not dst.st_mode & stat.S_ISVTX:
            problems.append(
                f"{path}: its directory {directory} is writable by others or its group "
                f"(mode {_mode(dst.st_mode)}), so the {kind} can be replaced"
            )
    return problems
