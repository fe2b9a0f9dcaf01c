"""Links in the Markdown a reader of the repository opens: each one resolves to a file inside it.

A link out of the checkout (``../shared/…``) works on one machine and is dead everywhere else.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "deploy" / "README.md", *ROOT.glob("docs/*.md")]
)
# [text](target) outside code spans; a target with a scheme (https:, mailto:) or only an anchor is skipped.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans (a regex in docs/spec.md looks like a link)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    for target in _links(document.read_text()):
        path = (document.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{document.name}: {target} points outside the repository"
        assert path.exists(), f"{document.name}: {target} does not exist"


def test_the_readme_links_the_design_notes() -> None:
    assert "docs/design.md" in _links((ROOT / "README.md").read_text())
