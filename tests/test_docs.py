"""The user docs: docs/cli.md is what the commands say, and every relative link leads somewhere."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _make_cli():
    spec = importlib.util.spec_from_file_location("make_cli", ROOT / "docs" / "make_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date():
    make_cli = _make_cli()
    assert make_cli.OUT.read_text() == make_cli.render(), (
        "docs/cli.md is out of date with the commands: regenerate it with `python docs/make_cli.py`"
    )


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-',
    a repeated heading numbered -1, -2, …"""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(page.read_text()):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _broken_links(page: Path) -> list[str]:
    broken = []
    for line in _prose(page.read_text()):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading in {dest.name})")
    return broken


def test_every_relative_link_leads_to_a_file_and_heading():
    assert len(PAGES) > 5
    broken = [b for page in PAGES for b in _broken_links(page)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading: with `code`\n")
    page.write_text("[ok](there.md#a-heading-with-code) [file](missing.md) [anchor](there.md#nowhere)\n"
                    "```\n[in code](ignored.md)\n```\n")  # fmt: skip
    assert _broken_links(page) == ["page.md: missing.md (no such file)",
                                   "page.md: there.md#nowhere (no such heading in there.md)"]  # fmt: skip


def test_readme_commands_match_ci():
    """The README's set-up and test commands are the ones .ci/run executes."""
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    install = re.search(r"pip install -q (torch==\S+ -e \S+)", ci).group(1)
    test = re.search(r"^python3 -m (pytest.*)$", ci, re.M).group(1)
    assert f"pip install {install}" in readme
    assert f"python -m {test}\n" in readme


def _bad_tables(page: Path) -> list[str]:
    """Rows whose cell count differs from their table's header (an unescaped | in a cell, even in
    `code`, splits it on GitHub)."""
    bad, width = [], None
    for line in _prose(page.read_text()):
        if not line.startswith("|"):
            width = None
            continue
        cells = len(re.split(r"(?<!\\)\|", line.strip().strip("|")))
        if width is None:
            width = cells
        elif cells != width:
            bad.append(f"{page.name}: table row with {cells} cells, header has {width}: {line[:80]}")
    return bad


def test_every_table_row_has_its_headers_cells(tmp_path):
    bad = [b for page in PAGES for b in _bad_tables(page)]
    assert not bad, "\n".join(bad)
    page = tmp_path / "t.md"
    page.write_text("| a | b |\n|---|---|\n| `x|y` | z |\n")
    assert len(_bad_tables(page)) == 1


def test_readme_is_a_page_a_newcomer_reads():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 350, f"README.md has {len(lines)} lines: move material into docs/"
