"""The README and docs/ as a newcomer follows them: every relative link and #anchor resolves,
every `make` target the README names exists, and the README stays a landing page."""

import re

import pytest
from conftest import PROJECT

PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"(?m)^#{1,6} (.+)$", text)}


def links(path) -> list[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())
    return [t for t in LINK.findall(text) if not t.startswith(("http://", "https://", "mailto:"))]


def test_slug_follows_github():
    assert slug("On a GPU: `scripts/gpu-check.sh`") == "on-a-gpu-scriptsgpu-checksh"
    assert slug("The study's own settings on a CPU, measured") == "the-studys-own-settings-on-a-cpu-measured"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
        elif anchor and dest.suffix != ".md":
            broken.append(f"{target} (an anchor into a file that is not Markdown)")
    assert not broken, f"{page.name}: {', '.join(broken)}"


def test_every_make_target_the_readme_names_exists():
    makefile = (PROJECT / "Makefile").read_text()
    targets = set(re.findall(r"(?m)^([\w-]+):", makefile))
    named = set(re.findall(r"`make ([\w-]+)", (PROJECT / "README.md").read_text()))
    named |= set(re.findall(r"(?m)^make ([\w-]+)", (PROJECT / "README.md").read_text()))
    assert named and named <= targets, f"README names make targets the Makefile lacks: {sorted(named - targets)}"


def test_readme_is_a_landing_page_and_every_docs_page_is_indexed():
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    pages = {p.name for p in PAGES[1:]}
    indexed = {m for m in re.findall(r"\]\(docs/([\w-]+\.md)", readme)}
    assert pages == indexed, f"docs pages the README's index misses: {sorted(pages - indexed)}"


def test_licence_and_citation_exist():
    assert "MIT License" in (PROJECT / "LICENSE").read_text()
    citation = (PROJECT / "CITATION.cff").read_text()
    assert "cff-version:" in citation and "Deeper, Broader and Artier Domain Generalization" in citation
