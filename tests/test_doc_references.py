"""No file in the repository names a Markdown document that is not in it.

A user or a new maintainer must be able to open every document a docstring,
comment or doc cites. Upstream documents are cited by URL (not checked here) or
as an upstream source file with its version.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_MD = re.compile(r"(?<![\w.-])((?:[\w.-]+/)*[\w-][\w.-]*\.md)\b")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")

# A test that writes a document itself, in its tmp_path: (file, name).
_MADE_BY_TESTS = {("tests/deploy/test_forms_validator.py", "x.md")}


def _files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [name for name in listed.stdout.splitlines() if (ROOT / name).is_file()]


def missing_documents(root: Path, files: list[str]) -> list[str]:
    """``file:line: name`` for every ``*.md`` named in ``files`` (paths under ``root``)
    that is none of them: not beside the file, not under ``root``, and no listed
    file ends with that name (``deploy.md`` may stand for ``docs/deploy.md``)."""
    present = set(files)
    suffixes = {f"/{name}" for name in files}
    problems: list[str] = []
    for rel in files:
        path = root / rel
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary data
        for number, line in enumerate(text.splitlines(), 1):
            for match in _MD.finditer(_URL.sub(" ", line)):
                name = match.group(1)
                if (rel, name) in _MADE_BY_TESTS or name in present:
                    continue
                if (path.parent / name).exists() or any(s.endswith(f"/{name}") for s in suffixes):
                    continue
                problems.append(f"{rel}:{number}: {name}")
    return problems


def test_every_named_document_is_in_the_repository() -> None:
    files = _files()
    problems = missing_documents(ROOT, files)
    # this file's own examples are names that must not resolve
    assert [p for p in problems if not p.startswith("tests/test_doc_references.py:")] == []


def test_the_check_reports_a_missing_document(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("See [setup](setup.md).\n", encoding="utf-8")
    (tmp_path / "docs" / "setup.md").write_text("Run it.\n", encoding="utf-8")
    (tmp_path / "tool.py").write_text(
        '"""Per docs/setup.md, guide.md and https://example.org/upstream.md;\n'
        'not per protocol-notes.md."""\n',
        encoding="utf-8",
    )
    files = ["docs/guide.md", "docs/setup.md", "tool.py"]
    assert missing_documents(tmp_path, files) == ["tool.py:2: protocol-notes.md"]
