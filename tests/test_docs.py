"""The documentation holds together: every relative link resolves, the index reaches every result page, and the
docs folder stays small enough to read online."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
#: ``[text](target)`` and ``![alt](target)``; the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
#: The docs folder's budget (figures sized for reading, not for print).
DOCS_BUDGET_BYTES = 10 * 2**20


def markdown_files() -> list[Path]:
    """Every markdown page a reader meets: the README, docs/ and data/."""
    pages = [REPO / "README.md", *DOCS.rglob("*.md"), *(REPO / "data").rglob("*.md")]
    return sorted(page for page in pages if page.is_file())


def relative_links(page: Path) -> list[str]:
    """The relative link targets of a markdown page (code blocks and inline code ignored), fragments dropped."""
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s):, mailto:, in-page anchors
        targets.append(target.split("#", 1)[0])
    return targets


def test_link_pattern_finds_links_and_skips_code():
    page_text = "See [a](x.md#s) and ![b](f/y.png), not `[c](z.md)` nor [d](https://e.org).\n```\n[e](w.md)\n```\n"
    text = INLINE_CODE.sub("", FENCE.sub("", page_text))
    assert LINK.findall(text) == ["x.md#s", "f/y.png", "https://e.org"]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = [target for target in relative_links(page) if not (page.parent / target).exists()]
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def test_index_leads_to_every_result_page():
    index = DOCS / "index.md"
    linked = {(index.parent / target).resolve() for target in relative_links(index)}
    results = sorted((DOCS / "results").rglob("*.md"))
    assert results, "no generated result pages under docs/results"
    missing = [str(page.relative_to(DOCS)) for page in results if page.resolve() not in linked]
    assert not missing, f"docs/index.md does not link {missing}"
    pages = [page for page in DOCS.glob("*.md") if page.name != "index.md"]
    missing = [page.name for page in pages if page.resolve() not in linked]
    assert not missing, f"docs/index.md does not link the pages {missing}"


def test_every_result_page_has_its_json_and_command():
    for page in (DOCS / "results").rglob("*.md"):
        assert page.with_suffix(".json").is_file(), f"{page.relative_to(DOCS)} has no JSON beside it"
        assert "python -m benchmarks." in page.read_text(encoding="utf-8"), \
            f"{page.relative_to(DOCS)} does not say which command made it"


def test_docs_fit_their_budget():
    total = sum(path.stat().st_size for path in DOCS.rglob("*") if path.is_file())
    assert total < DOCS_BUDGET_BYTES, f"docs/ holds {total / 2**20:.1f} MiB, over {DOCS_BUDGET_BYTES / 2**20:.0f} MiB"
