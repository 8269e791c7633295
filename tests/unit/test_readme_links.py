"""Every relative link in the README (and the docs it leads to) resolves inside the repository:
the file exists, and a ``#fragment`` names a heading of that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces → hyphens."""
    anchors = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_the_readme_has_relative_links_to_check() -> None:
    assert _relative_links(REPO / "README.md")


@pytest.mark.parametrize(
    ("page", "target"),
    [(page, target) for page in PAGES for target in _relative_links(page)],
    ids=lambda value: value.name if isinstance(value, Path) else value,
)
def test_relative_link_resolves_inside_the_repository(page: Path, target: str) -> None:
    path_part, _, fragment = target.partition("#")
    resolved = (page.parent / path_part).resolve() if path_part else page
    assert resolved.is_relative_to(REPO), f"{page.name}: {target} leaves the repository"
    assert resolved.exists(), f"{page.name}: {target} does not exist"
    if fragment:
        assert resolved.suffix == ".md", f"{page.name}: {target}: a fragment on a file that is not Markdown"
        assert fragment in _anchors(resolved), f"{page.name}: {target}: no such heading in {resolved.name}"
