"""The documentation's links lead somewhere: every relative link of the README and of doc/*.md names
a file of the repository, and an #anchor into a markdown file names one of its headings. The README
stays a front page."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "doc").glob("*.md"))]
README_MAX_LINES = 300

# [text](target) and ![alt](target), with an optional "title"; the text may hold `code` and brackets
# one level deep ([`doc/`](doc/README.md)).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")
EXTERNAL = ("http://", "https://", "mailto:")


def prose(text: str) -> str:
    """The text outside fenced code blocks, where a link is not a link."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return "\n".join(kept)


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, markup dropped, punctuation but hyphens and
    underscores dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor, with GitHub's -1, -2 ... for repeated headings."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        name = anchor(match.group(1))
        count = seen.get(name, 0)
        seen[name] = count + 1
        found.add(name if count == 0 else f"{name}-{count}")
    return found


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each relative link of `page`, whose files must lie under `root`."""
    problems = []
    for target in links(page):
        if target.startswith(EXTERNAL):
            continue
        path, _, fragment = target.partition("#")
        file = page if not path else (page.parent / unquote(path)).resolve()
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif not file.is_relative_to(root.resolve()):
            problems.append(f"{target}: outside the repository")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            problems.append(f"{target}: {file.name} has no heading #{fragment}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[page.relative_to(ROOT).as_posix() for page in PAGES])
def test_relative_links_lead_somewhere(page: Path) -> None:
    assert links(page), f"{page.name} has no links: is the link pattern still right?"
    assert not broken(page), f"{page.relative_to(ROOT)}: broken links {broken(page)}"


def test_readme_is_a_front_page() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; move the detail into doc/ (at most {README_MAX_LINES})"
    )


def test_every_doc_page_is_linked_from_the_readme() -> None:
    linked = {target.partition("#")[0] for target in links(ROOT / "README.md")}
    missing = [page.name for page in PAGES[1:] if f"doc/{page.name}" not in linked]
    assert not missing, f"README.md's Documentation list misses {missing}"


def test_the_checker_sees_broken_links(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "elsewhere.md").touch()
    (repo / "other.md").write_text("# Other page\n\n## Run it, then `stop` it\n", encoding="utf-8")
    page = repo / "page.md"
    page.write_text(
        "# Page\n\n"
        "[good](other.md#run-it-then-stop-it) [self](#page) [web](https://example.com/x#y)\n"
        "![missing image](shot.png) [missing anchor](other.md#nothing) [gone](gone.md)\n"
        "[up](../elsewhere.md)\n\n"
        "```\n[not a link](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert broken(page, repo) == [
        "shot.png: no such file",
        "other.md#nothing: other.md has no heading #nothing",
        "gone.md: no such file",
        "../elsewhere.md: outside the repository",
    ]
