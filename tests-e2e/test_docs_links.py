"""Every relative link in README.md, the package READMEs and docs/ leads somewhere.

``mkdocs build --strict`` checks the site's pages, but only in the docs environment and not
README.md, which GitHub and PyPI show. This checks every Markdown link, image and raw HTML
``src``/``href`` that is relative: the file must exist, and a ``#fragment`` must name a heading
(or an explicit ``id``) of the target page, slugged as mkdocs does or as GitHub does (the
pages are read in both places). Also: every page under docs/ is in mkdocs.yml's navigation,
every snippet a page includes exists, the deployment files' build references exist, and the
proxy configurations shown in docs/broker.md are the files in docs/deploy/ (one source, no
drift).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from harness.modes import E2E_ROOT

REPO = E2E_ROOT.parent
DOCS = REPO / "docs"
PAGES = sorted(
    [REPO / "README.md", *REPO.glob("packages/*/README.md"), *DOCS.rglob("*.md")],
)

_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^[ ]{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_HTML_ATTR = re.compile(r"<(?:a|img|source)\b[^>]*?\b(?:href|src)=[\"']([^\"']+)[\"']", re.I)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_EXPLICIT_ID = re.compile(r"""\bid=["']([^"']+)["']|\{[^}]*#([\w-]+)[^}]*\}""")
_SNIPPET = re.compile(r"""^[ \t]*--8<--[ \t]+["']([^"']+)["']""", re.MULTILINE)


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}: {self.target}"


def _blank(match: re.Match[str]) -> str:
    """Replace a code span or block by spaces, keeping line numbers."""
    return re.sub(r"[^\n]", " ", match.group(0))


def prose(text: str) -> str:
    """The page without code blocks and inline code, where links are not links."""
    return _INLINE_CODE.sub(_blank, _FENCE.sub(_blank, text))


def links_of(page: Path) -> list[Link]:
    text = prose(page.read_text(encoding="utf-8"))
    found = []
    for pattern in (_MD_LINK, _REF_DEF, _HTML_ATTR):
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Link(page, line, match.group(1)))
    return found


def _is_relative(target: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", target)


LINKS = [link for page in PAGES for link in links_of(page) if _is_relative(link.target)]


# -- anchors ------------------------------------------------------------------------------------


def _heading_text(raw: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # raw HTML tags
    text = re.sub(r"\{[^}]*\}\s*$", "", text)  # attr_list
    return text.replace("`", "").replace("**", "").strip()


def mkdocs_slug(text: str) -> str:
    """Python-Markdown's toc slugify (what mkdocs uses)."""
    value = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def github_slug(text: str) -> str:
    """GitHub's heading anchors: lower case, punctuation dropped, each space a hyphen."""
    value = re.sub(r"[^\w\- ]", "", text.lower())
    return value.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    raw = page.read_text(encoding="utf-8")
    text = _FENCE.sub(_blank, raw)
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in _HEADING.finditer(text):
        heading = _heading_text(match.group(2))
        for slug, dup in ((mkdocs_slug(heading), "_"), (github_slug(heading), "-")):
            key = dup + slug
            count = seen.get(key, 0)
            seen[key] = count + 1
            found.add(slug if count == 0 else f"{slug}{dup}{count}")
    for match in _EXPLICIT_ID.finditer(text):
        found.add(match.group(1) or match.group(2))
    return frozenset(found)


# -- the tests ----------------------------------------------------------------------------------


def test_the_pages_have_links_to_check() -> None:
    assert len(LINKS) > 100
    assert any("#" in link.target for link in LINKS)


@pytest.mark.parametrize("link", LINKS, ids=str)
def test_a_relative_link_resolves(link: Link) -> None:
    path_part, _, fragment = link.target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    target = (link.page.parent / path_part).resolve() if path_part else link.page
    assert target.exists(), f"{link}: {target.relative_to(REPO)} does not exist"
    if link.page.is_relative_to(DOCS):
        assert target.is_relative_to(DOCS), (
            f"{link}: a docs page links outside docs/ (the site cannot serve it); "
            "use a https://github.com/remotellm/remotellm/… URL"
        )
    if fragment:
        assert target.suffix == ".md", f"{link}: a fragment on a file that is not a page"
        assert unquote(fragment) in anchors(target), (
            f"{link}: no heading or id {fragment!r} in {target.relative_to(REPO)}"
        )


def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def test_every_docs_page_is_in_the_site_navigation() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    for page in nav:
        assert (DOCS / page).is_file(), page


def test_every_included_snippet_exists() -> None:
    included = [
        (page, match.group(1))
        for page in DOCS.rglob("*.md")
        for match in _SNIPPET.finditer(page.read_text(encoding="utf-8"))
    ]
    assert included
    for page, name in included:
        assert (DOCS / name).is_file(), f"{page.relative_to(REPO)} includes missing {name}"


def _blocks(page: Path, language: str) -> list[str]:
    fence = re.compile(rf"^```{language}\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return fence.findall(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("language", "name"), [("nginx", "nginx.conf"), ("caddyfile", "Caddyfile")]
)
def test_the_proxy_configuration_in_broker_md_is_the_deploy_file(language: str, name: str) -> None:
    shown = _blocks(DOCS / "broker.md", language)
    assert len(shown) == 1
    assert shown[0] in (DOCS / "deploy" / name).read_text(encoding="utf-8"), (
        f"docs/broker.md's {language} block and docs/deploy/{name} differ: change both"
    )


def test_the_compose_file_builds_from_files_that_exist() -> None:
    compose_file = DOCS / "deploy" / "compose.yaml"
    compose = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    assert set(compose["services"]) == {"broker", "connector"}
    for service in compose["services"].values():
        context = (compose_file.parent / service["build"]["context"]).resolve()
        assert context == REPO
        dockerfile = context / service["build"]["dockerfile"]
        assert dockerfile.is_file()
        for line in dockerfile.read_text(encoding="utf-8").splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                source = line.split()[1]
                assert (context / source).exists(), f"{dockerfile.name}: COPY {source}"
        assert service["stop_grace_period"] == "45s"


def test_the_dockerfiles_run_the_console_scripts_of_their_package() -> None:
    for service, package in (("broker", "remotellm-broker"), ("connector", "remotellm-connector")):
        text = (DOCS / "deploy" / f"{service}.Dockerfile").read_text(encoding="utf-8")
        assert f'ENTRYPOINT ["{package}"]' in text
        assert f"./packages/{package}" in text
        assert "USER remotellm" in text
        pyproject = (REPO / "packages" / package / "pyproject.toml").read_text(encoding="utf-8")
        assert f'{package} = "' in pyproject
