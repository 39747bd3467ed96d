"""The repository's text makes sense to a reader of the repository.

Comments, docstrings and documents must not cite things a reader cannot see:
the numbered sections of an outside specification ("SPEC §4"), tracker
issues ("issue 12", "the issue's target"), or a change's closing note. Say
what is meant instead (the rule, the limit, the reason). The test names every
offending file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What is read: these folders (recursively) and files, text only.
SCOPE = ["trio_durable", "tests", "benchmarks", "docs", "examples", "README.md"]
#: Never read: caches, build output, and this file (which names the patterns).
SKIPPED_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "build"}
SKIPPED_SUFFIXES = {".pyc", ".png", ".jpg", ".sqlite3", ".db", ".so", ".gz"}

#: References a reader of the repository cannot follow.
FORBIDDEN = re.compile(
    # "SPEC" in capitals only: a "spec" of an app or a cluster is fine.
    r"(?-i:\bSPEC\b)|\bissue \d+|the issue's|closing note",
    re.IGNORECASE,
)


def _text_files() -> list[Path]:
    files: list[Path] = []
    for name in SCOPE:
        top = ROOT / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in candidates:
            if not path.is_file() or path.resolve() == Path(__file__).resolve():
                continue
            if SKIPPED_PARTS.intersection(path.relative_to(ROOT).parts):
                continue
            if path.suffix in SKIPPED_SUFFIXES:
                continue
            files.append(path)
    return files


def _hits(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []  # not text
    where = path.relative_to(ROOT)
    return [
        f"{where}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if FORBIDDEN.search(line)
    ]


def test_the_patterns_catch_what_they_should() -> None:
    for cited in [
        "see SPEC §4",
        "SPEC section 7",
        "the SPEC's limit",
        "as issue 12 asks",
        "the issue's target",
        "see the closing note",
        "(closing note, item 2)",
    ]:
        assert FORBIDDEN.search(cited), cited
    for fine in [
        "RFC 6455 §5.2",
        "a tissue 3 times",
        "no issues found",
        "issues of a tracker",
        "a specification",
        "spec = ClusterSpec(...)",
        "the note closing the table",
    ]:
        assert not FORBIDDEN.search(fine), fine


def test_the_scope_is_read() -> None:
    files = {path.relative_to(ROOT).as_posix() for path in _text_files()}
    assert "README.md" in files and "trio_durable/__init__.py" in files, sorted(files)[:10]
    assert "tests/test_wording.py" not in files, "this file names the patterns"


def test_no_text_cites_a_spec_section_an_issue_or_a_closing_note() -> None:
    hits = [hit for path in _text_files() for hit in _hits(path)]
    assert hits == [], "say what is meant instead of citing it:\n" + "\n".join(hits)
