"""Open every page of the built site in headless Chromium and list what a reader would hit.

    .venv/bin/python tools/check_site.py [build/site]      # exit 1 and a list when a page is bad

A page is bad with a broken figure (an <img> that did not load), an error output cell (a
traceback in a lab), an internal link to a page or #anchor that does not exist, a console error
or a failed request. The site is served from a loopback HTTP server, as a static host would
serve it. Uses the Debian chromium (/usr/bin/chromium, or $LAB_CHROMIUM); Playwright never
downloads a browser.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import importlib.util
import os
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag, urlparse

# Debian's chromium; LAB_CHROMIUM names another Chromium/Chrome binary (a CI runner's).
CHROMIUM = os.environ.get("LAB_CHROMIUM", "/usr/bin/chromium")

# Lazy images (the figures gallery) load only when scrolled to: load them all, then check.
LOAD_LAZY = """async () => {
  for (const i of document.images) i.loading = 'eager';
  await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
}"""

# Run in each page: what the checks need from its DOM.
PAGE_FACTS = """() => ({
  brokenImages: [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
                                    .map(i => i.getAttribute('src')),
  // shown with another shape than the file's (a width set and a height kept): squashed
  distorted: [...document.images].filter(i => i.naturalWidth && i.width && i.height &&
      Math.abs((i.height / i.width) / (i.naturalHeight / i.naturalWidth) - 1) > 0.03)
                                 .map(i => i.getAttribute('src')),
  errorCells: [...document.querySelectorAll('.output.traceback, .output.error')]
                  .map(e => e.innerText.split('\\n').filter(Boolean).slice(-1)[0] || '?'),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
})"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the report lists failures; no per-request log
        pass


def _serve(site: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check_site(site: Path, search_for: str | None = None) -> tuple[int, list[str]]:
    """(pages opened, problems) for the HTML site in `site`; problems name page and cause."""
    site = Path(site)
    if not (site / "index.html").is_file():
        raise ValueError(f"site: no index.html in {site} (build it: tools/build_site.py)")
    from playwright.sync_api import sync_playwright

    # _static/ holds the theme's assets (some ship template fragments as .html): not pages
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                   if not p.relative_to(site).as_posix().startswith("_static/"))
    server = _serve(site)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    problems: list[str] = []
    ids: dict[str, set[str]] = {}
    links: list[tuple[str, str]] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page()
            current = {"name": ""}
            page.on("console", lambda m: m.type == "error" and problems.append(
                f"{current['name']}: console error: {m.text}"))
            page.on("pageerror", lambda e: problems.append(
                f"{current['name']}: script error: {e}"))
            page.on("response", lambda r: r.status >= 400 and problems.append(
                f"{current['name']}: HTTP {r.status} for {r.url.removeprefix(base)}"))
            for name in pages:
                current["name"] = name
                page.goto(base + name, wait_until="load")
                page.evaluate(LOAD_LAZY)
                facts = page.evaluate(PAGE_FACTS)
                problems += [f"{name}: broken image {src}" for src in facts["brokenImages"]]
                problems += [f"{name}: distorted image {src}" for src in facts["distorted"]]
                problems += [f"{name}: error output cell ({last})" for last in facts["errorCells"]]
                ids[name] = set(facts["ids"])
                links += [(name, href) for href in facts["links"] if href.startswith(base)]
            if search_for:
                problems += _check_search(page, base, search_for, current)
            problems += _check_phone_navigation(browser, base, current)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    problems += _check_links(links, base, ids, site)
    return len(pages), problems


def _check_links(links, base: str, ids: dict[str, set[str]], site: Path) -> list[str]:
    problems = set()
    for page, href in links:
        url, fragment = urldefrag(href)
        target = urlparse(url).path.removeprefix(urlparse(base).path)
        if target == "" or target.endswith("/"):
            target += "index.html"
        if target not in ids:  # not an HTML page of the site: a file (download, image)?
            if not (site / target).is_file():
                problems.add(f"{page}: broken link to {target}")
            continue
        if fragment and fragment not in ids[target]:
            problems.add(f"{page}: broken link to {target}#{fragment}")
    return sorted(problems)


def _check_search(page, base: str, word: str, current: dict) -> list[str]:
    """The search box works offline: searching `word` lists at least one page."""
    current["name"] = "search.html"
    page.goto(base + f"search.html?q={word}")  # where the search box leads, in any theme
    try:
        page.wait_for_selector("#search-results li", timeout=15000)
    except Exception:
        return [f"search.html: searching '{word}' listed no page"]
    return []


def _check_phone_navigation(browser, base: str, current: dict) -> list[str]:
    """On a phone-sized screen the visible menu button opens the site's navigation (a theme's
    sidebar pop-up: #pst-primary-sidebar-modal); skipped for a site without one."""
    current["name"] = "index.html (phone)"
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    try:
        phone.goto(base + "index.html", wait_until="load")
        button = phone.locator(".primary-toggle:visible")
        if button.count() == 0 or phone.locator("#pst-primary-sidebar-modal").count() == 0:
            return []
        button.first.click()
        phone.wait_for_timeout(300)
        if not phone.evaluate("document.querySelector('#pst-primary-sidebar-modal').open"):
            return ["index.html (phone): the menu button does not open the navigation"]
        return []
    finally:
        phone.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", type=Path,
                        default=Path(__file__).resolve().parent.parent / "build" / "site")
    parser.add_argument("--search", default="quantization",
                        help="a word the search box must find (default: quantization)")
    parser.add_argument("--skip-without-browser", action="store_true",
                        help="exit 0 with SKIPPED where Chromium or playwright is missing (make test)")
    args = parser.parse_args(argv)
    missing = [what for what, there in (
        (f"Chromium at {CHROMIUM} (apt-get install chromium, or set LAB_CHROMIUM)", shutil.which(CHROMIUM)),
        ("the playwright package (pip install -e '.[dev]')", importlib.util.find_spec("playwright"))) if not there]
    if missing:
        print(f"{'SKIPPED' if args.skip_without_browser else 'cannot check'} the site in a browser: "
              f"needs {' and '.join(missing)}")
        return 0 if args.skip_without_browser else 2
    count, problems = check_site(args.site, search_for=args.search)
    for line in problems:
        print(line)
    print(f"{count} pages opened in Chromium, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
