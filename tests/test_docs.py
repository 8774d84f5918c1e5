"""The project's docs stay inside the repository and in step with the code.

- No file cites a document that is not in the repository.
- Every ``docs/*.md`` path a comment or docstring under atcrl/ names exists, with the section it names.
- docs/reference-settings.md keeps its parseable form: one ``setting | reference | atcrl default | where``
  table per settings section, every ``(Dn)`` marker naming an entry under Deviations, and every
  ``atcrl.…`` name in it, or in docs/architecture.md, resolving in the code.
"""

from __future__ import annotations

import importlib
import inspect
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SETTINGS = REPO / "docs" / "reference-settings.md"
ARCHITECTURE = REPO / "docs" / "architecture.md"
COLUMNS = ["setting", "reference", "atcrl default", "where"]
# Spelled in two parts so that this file does not name them itself.
OUTSIDE_DOCS = ("PAPER" + ".md", "DESIGN" + ".md")
DOC_PATH = re.compile(r"docs/[\w./-]+\.md")
# A citation: docs/NAME.md followed by one or more quoted section names ("A", "B" or 'A').
CITATION = re.compile(r"""(docs/[\w./-]+\.md)[,:;]?\s*((?:(["'])[^"'\n]+\3[,;]?\s*)+)""")
MARKER = re.compile(r"\(D(\d+)\)$")
DOTTED = re.compile(r"""`(atcrl(?:\.\w+|\["[^"]*"\])+)""")


def _scanned_files() -> list[Path]:
    files = [REPO / "README.md"]
    for top in ("atcrl", "tests", "scripts", "docs"):
        files += [p for p in (REPO / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return files


def test_no_file_names_a_document_outside_the_repository():
    offenders = []
    for path in _scanned_files():
        data = path.read_bytes()
        offenders += [f"{path.relative_to(REPO)}: {name}" for name in OUTSIDE_DOCS if name.encode() in data]
    assert not offenders, f"cite docs/reference-settings.md or docs/architecture.md instead: {offenders}"


def _comments_and_strings(path: Path) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [t.string for t in tokens if t.type in (tokenize.COMMENT, tokenize.STRING)]


def _headings(doc: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")}


def _cited_texts() -> dict[str, list[str]]:
    """Library file -> its comments and string literals that name a docs/*.md path."""
    found = {}
    for path in sorted((REPO / "atcrl").rglob("*.py")):
        texts = [t for t in _comments_and_strings(path) if DOC_PATH.search(t)]
        if texts:
            found[str(path.relative_to(REPO))] = texts
    return found


def test_library_comments_cite_docs_that_exist():
    cited = _cited_texts()
    assert cited, "no library comment names a docs/*.md path: the scan is broken"
    missing = [f"{where}: {doc}" for where, texts in cited.items() for text in texts
               for doc in DOC_PATH.findall(text) if not (REPO / doc).is_file()]
    assert not missing, f"comments name docs that are not in the repository: {missing}"


def test_library_comments_cite_sections_that_exist():
    bad, seen = [], 0
    for where, texts in _cited_texts().items():
        for text in texts:
            for doc, names, _ in CITATION.findall(text):
                headings = _headings(REPO / doc) if (REPO / doc).is_file() else set()
                for name in re.findall(r"""(["'])([^"'\n]+)\1""", names):
                    seen += 1
                    if name[1] not in headings:
                        bad.append(f"{where}: {doc}, {name[1]!r}")
    assert seen, "no library comment cites a section by name: the scan is broken"
    assert not bad, f"cited sections that the doc does not have: {bad}"


def _sections(doc: Path) -> dict[str, list[str]]:
    """'## ' heading -> its lines (subsections included)."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in doc.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def _cells(line: str) -> list[str]:
    # "\|" inside a cell (e.g. −\|A\|) is a literal bar, not a column break.
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def settings_tables() -> dict[str, list[dict[str, str]]]:
    """Section -> its table's rows as {column: cell}, for every section of docs/reference-settings.md with
    a table (the form a test comparing commands with the reference reads)."""
    tables = {}
    for name, lines in _sections(SETTINGS).items():
        rows = [_cells(line) for line in lines if line.startswith("|")]
        if rows:
            header, rule, *body = rows
            assert header == COLUMNS, f"{name}: columns {header}, expected {COLUMNS}"
            assert all(set(c) <= set("-:") for c in rule), f"{name}: second table line is not a rule"
            assert all(len(r) == len(COLUMNS) for r in body), f"{name}: a row has the wrong number of cells"
            tables[name] = [dict(zip(COLUMNS, r)) for r in body]
    return tables


def test_every_settings_section_has_one_table():
    sections = _sections(SETTINGS)
    tables = settings_tables()
    expected = {"ATC objective", "Encoders", "Offline pretraining", "Online SAC + ATC for DMC", "PPO for Atari",
                "DQN expert for Atari", "PPO-LSTM for DMLab", "DMLab environments", "Comparison objectives", "Offline pipeline and demonstrations", "Multitask",
                "Anchor numbers"}
    assert set(tables) == expected
    assert "Deviations" in sections
    for name in expected:
        headers = [line for line in sections[name] if line.startswith("| setting |")]
        assert len(headers) == 1, f"{name}: {len(headers)} tables, expected one"


def _deviation_ids() -> set[int]:
    text = "\n".join(_sections(SETTINGS)["Deviations"])
    return {int(n) for n in re.findall(r"^- \*\*D(\d+)\.", text, re.MULTILINE)}


def test_deviation_markers_and_entries_match():
    marked = {int(m.group(1)) for rows in settings_tables().values() for row in rows
              if (m := MARKER.search(row["atcrl default"]))}
    entries = _deviation_ids()
    assert entries == set(range(1, len(entries) + 1)), f"deviations are not numbered D1..Dn: {sorted(entries)}"
    assert marked - entries == set(), f"table markers without a Deviations entry: {sorted(marked - entries)}"
    assert entries - marked == set(), f"Deviations entries no table row marks: {sorted(entries - marked)}"


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and follow the rest (attributes, ["key"] lookups); the object
    named. An attribute a class sets only in __init__ counts when its source assigns ``self.<name>`` (None then)."""
    parts = re.findall(r"""\.?(\w+)|\["([^"]*)"\]""", dotted)
    names = [a for a, _ in parts if a]
    obj, n = None, len(names)
    while n and obj is None:
        try:
            obj = importlib.import_module(".".join(names[:n]))
        except ModuleNotFoundError:
            n -= 1
    if obj is None:
        raise ImportError(f"{dotted}: no importable module")
    for attr, key in parts[n:]:
        if key:
            obj = obj[key]
        elif hasattr(obj, attr):
            obj = getattr(obj, attr)
        elif inspect.isclass(obj) and re.search(rf"self\.{attr}\b", inspect.getsource(obj)):
            return None  # an instance attribute: nothing further to follow statically
        else:
            raise AttributeError(f"{obj!r} has no {attr!r}")
    return obj


@pytest.mark.parametrize("doc", [SETTINGS, ARCHITECTURE], ids=lambda p: p.name)
def test_code_names_in_the_docs_resolve(doc):
    names = sorted(set(DOTTED.findall(doc.read_text())))
    assert len(names) > 10, f"too few atcrl names found in {doc.name}: the scan is broken"
    unresolved = []
    for name in names:
        try:
            _resolve(name)
        except (ImportError, AttributeError, KeyError) as e:
            unresolved.append(f"{name} ({e})")
    assert not unresolved, f"{doc.name} names code that does not exist: {unresolved}"
