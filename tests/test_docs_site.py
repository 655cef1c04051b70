"""The built site reads offline: no asset from the network, and every formula renders.

Builds the site with ``mkdocs build --strict`` into a temporary folder (a few seconds), then:

* the build logs no warning (without ``-q``: ``-q`` drops warnings before ``--strict`` counts them,
  so a broken cross-reference would pass, rendered as literal text);
* no page loads a script, stylesheet, font, image or frame from an ``http(s)://`` address (the
  mkdocs-material theme would fetch Google Fonts and, for ``file://`` search, a shim from unpkg;
  ``mkdocs.yml`` turns both off), and no stylesheet imports one;
* KaTeX, its fonts and the offline search index are in the site itself;
* every formula of every page renders with the vendored KaTeX in strict mode (``throwOnError``),
  when ``node`` is available to run it.
"""

from __future__ import annotations

import html
import html.parser
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXTERNAL = re.compile(r"^(?:https?:)?//", re.I)
ASSET_ATTRIBUTES = {
    "script": ["src"],
    "link": ["href"],
    "img": ["src", "srcset"],
    "iframe": ["src"],
    "source": ["src", "srcset"],
    "video": ["src", "poster"],
    "audio": ["src"],
    "embed": ["src"],
    "object": ["data"],
}
# <link rel=...> values that make the browser fetch something (not e.g. rel="canonical").
FETCHING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "manifest", "preconnect"}


class AssetCollector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "link" and not FETCHING_RELS & set((values.get("rel") or "").lower().split()):
            return
        for attribute in ASSET_ATTRIBUTES.get(tag, []):
            if values.get(attribute):
                self.assets.append(values[attribute])


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[pathlib.Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner (a print)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, result


@pytest.fixture(scope="module")
def site(build) -> pathlib.Path:
    out, result = build
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_build_logs_no_warning(build):
    _, result = build
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if re.match(r"(WARNING|ERROR)\b", line)]
    assert not warnings, "\n".join(warnings)
    assert result.returncode == 0, log


def test_pages_load_nothing_from_the_network(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 10
    external = {}
    for page in pages:
        collector = AssetCollector()
        collector.feed(page.read_text(encoding="utf-8"))
        bad = [a for a in collector.assets if EXTERNAL.match(a.strip())]
        if bad:
            external[str(page.relative_to(site))] = bad
        assert any("katex.min.js" in a for a in collector.assets), f"{page}: no KaTeX"
        assert any("iframe-worker/shim.js" in a for a in collector.assets), f"{page}: no local shim"
    assert not external, external
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8")
        imports = re.findall(r"@import\s+(?:url\()?['\"]?(?:https?:)?//", text)
        urls = re.findall(r"url\(\s*['\"]?(?:https?:)?//", text)
        assert not imports and not urls, f"{css.relative_to(site)} fetches from the network"


def test_assets_and_offline_search_are_in_the_site(site):
    katex = site / "javascripts" / "katex"
    assert (katex / "katex.min.js").is_file() and (katex / "auto-render.min.js").is_file()
    css = (katex / "katex.min.css").read_text(encoding="utf-8")
    fonts = re.findall(r"url\((fonts/[^)]+)\)", css)
    assert fonts and all((katex / f).is_file() for f in fonts), "a KaTeX font is missing"
    assert (site / "search" / "search_index.js").is_file(), "the offline plugin inlines the index"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="rules.html"' in index, "links must name .html files to work from file://"


def _formulas(site: pathlib.Path) -> list[tuple[str, str, bool]]:
    found = []
    pattern = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
    for page in sorted(site.rglob("*.html")):
        for tag, body in pattern.findall(page.read_text(encoding="utf-8")):
            tex = html.unescape(body).strip()
            display = tag == "div"
            opening, closing = ("\\[", "\\]") if display else ("\\(", "\\)")
            assert tex.startswith(opening) and tex.endswith(closing), tex
            found.append((str(page.relative_to(site)), tex[2:-2], display))
    return found


def test_every_formula_renders_with_the_vendored_katex(site, tmp_path):
    formulas = _formulas(site)
    assert len(formulas) > 50, "the rules page alone has more formulas than that"
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: formulas were found but not rendered")
    (tmp_path / "formulas.json").write_text(json.dumps(formulas), encoding="utf-8")
    script = """
        const katex = require(process.argv[1]);
        const formulas = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
        const errors = [];
        for (const [page, tex, displayMode] of formulas) {
          try { katex.renderToString(tex, { displayMode, throwOnError: true, strict: "error" }); }
          catch (e) { errors.push(`${page}: ${tex}: ${e.message}`); }
        }
        console.log(errors.join("\\n"));
        process.exit(errors.length ? 1 : 0);
    """
    katex = site / "javascripts" / "katex" / "katex.min.js"
    result = subprocess.run(
        [node, "-e", script, str(katex), str(tmp_path / "formulas.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
