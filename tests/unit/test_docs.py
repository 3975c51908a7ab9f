"""The front door and the reference pages stay true: the README is short with its two
commands, every relative link and anchor resolves, and the settings reference matches the
code it is generated from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.settings import reference_markdown

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to -."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


def test_the_settings_reference_is_generated_from_the_settings() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == reference_markdown(), (
        "docs/settings.md is stale: regenerate it with "
        "`.venv/bin/python -m monitor.settings > docs/settings.md`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in _LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert not broken, f"{page.name} links to what is not there: {broken}"


def test_the_readme_is_a_front_door_with_exactly_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)
    assert [lang for lang, _ in blocks] == ["bash", "bash"], blocks
    install, tests = (body.strip() for _, body in blocks)
    assert install.endswith("vidmon demo") and "\n" not in install
    assert tests == ".venv/bin/python -m pytest"
    assert len(text.splitlines()) <= 120
    assert "](docs/images/timeline.png)" in text
