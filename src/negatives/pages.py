"""Checking the built HTML pages in a real browser (Debian's Chromium, driven by Playwright).

    python -m negatives.pages _build/html                          # every page at 1280 and 390 px
    python -m negatives.pages _build/html --width 1280 --screenshots _build/screenshots
    python -m negatives.pages _build/html --page book/_generated/coupon.html --width 390

:func:`check_site` serves the HTML root over http on 127.0.0.1 (a random port, from a thread),
opens every page at every width in a fresh browser context, and checks, after the page loaded
and MathJax finished typesetting:

- overflow: the page does not scroll sideways, and no visible element reaches past the
  viewport's left or right edge unless a scroll box inside the viewport holds it;
- images: every ``<img>`` loaded (lazy ones are made eager first);
- MathJax: it started and finished, rendered no TeX error or undefined macro, pages with math
  got rendered math, and the page logged no console error and raised no exception;
- the network: every request that is not to the local server is aborted and reported.

It also measures what the notebook author tunes (the smallest scale at which a notebook figure
is shown, the body text's font size) and can take a full-page screenshot of each page at 1280 px.
Playwright uses the system's Chromium; it never downloads its own browsers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import math
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import pandas as pd

SETUP_HINT = "run `bash scripts/setup.sh --with-browser`"
CHROMIUM_NAMES: tuple[str, ...] = ("chromium", "chromium-browser")
CHROMIUM_ARGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # No host name resolves except the local server's address: even a connection the page makes
    # without a request Playwright sees (a <link rel=preconnect>) cannot leave the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
WIDTHS: tuple[int, ...] = (1280, 390)
SCREENSHOT_WIDTH = 1280
VIEWPORT_HEIGHT = 900
LOAD_TIMEOUT_S = 30.0
MATHJAX_TIMEOUT_S = 20.0
IMAGE_TIMEOUT_S = 10.0
# Offending elements reported per page and width (the outermost ones, the widest first).
MAX_OFFENDERS = 5
# Sphinx's own pages: genindex.html (the book declares no index entries, so it is an empty
# list) and search.html (its results exist only for a query typed in). Both are the theme's
# templates with no book content; their frame (header, sidebars) is checked on every other page.
SKIPPED_PAGES: frozenset[str] = frozenset({"genindex.html", "search.html"})


class BrowserMissing(RuntimeError):
    """Playwright or Chromium is not installed; the message names which and how to install it."""


@dataclass
class Problem:
    """One thing wrong with one page at one viewport width."""

    page: str  # path of the page under the HTML root, e.g. "book/_generated/coupon.html"
    width: int  # viewport width in CSS px
    kind: str  # overflow, image, mathjax, console, network, http, load
    detail: str

    def __str__(self) -> str:
        return f"{self.page} @ {self.width}px [{self.kind}] {self.detail}"


# ---------------------------------------------------------------------------------------------
# the pages and the browser


def site_pages(html_root: Path) -> list[str]:
    """Every page of a built book under ``html_root``, as posix paths relative to it, sorted."""
    root = Path(html_root)
    pages = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root)
        # _static/ holds the theme's HTML fragments (webpack macros), not pages.
        if rel.parts[0].startswith("_") or rel.as_posix() in SKIPPED_PAGES:
            continue
        if _is_redirect(path):
            continue  # the root index.html only redirects to the first chapter, checked itself
        pages.append(rel.as_posix())
    return pages


def _is_redirect(path: Path) -> bool:
    """A page that is only a ``<meta http-equiv="refresh">`` (Jupyter Book's root index.html)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return bool(re.search(r"http-equiv=[\"']?refresh", text, re.I)) and "<body" not in text.lower()


def find_chromium() -> str:
    """The path of the system's Chromium; :class:`BrowserMissing` when there is none."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(
        f"Chromium is not installed (no {' or '.join(CHROMIUM_NAMES)} on PATH): {SETUP_HINT}"
    )


def _sync_playwright() -> Any:
    """Playwright's sync API, imported on first use so that the package does not need it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserMissing(
            f"the Python package playwright is not installed in {sys.prefix}: {SETUP_HINT}"
        ) from exc
    return sync_playwright


def require_browser() -> str:
    """Check that Playwright and Chromium are installed; returns Chromium's path."""
    _sync_playwright()
    return find_chromium()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass  # one line per request would bury the report


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the browser closing a connection early (a page torn down) is not an error here


@contextlib.contextmanager
def serve(html_root: Path) -> Iterator[str]:
    """Serve ``html_root`` on 127.0.0.1 at a free port from a thread; yields the origin URL."""
    handler = functools.partial(_QuietHandler, directory=str(html_root))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="negatives-pages", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ---------------------------------------------------------------------------------------------
# what runs in the page

# Make lazy images eager (a lazy image below the fold never loads in a headless check) and wait
# until each has loaded or failed.
_LOAD_IMAGES_JS = """
async (timeoutMs) => {
  const imgs = [...document.images];
  for (const img of imgs) if (img.loading === 'lazy') img.loading = 'eager';
  const settled = imgs.map((img) => img.complete ? null : new Promise((resolve) => {
    img.addEventListener('load', resolve, {once: true});
    img.addEventListener('error', resolve, {once: true});
  }));
  await Promise.race([Promise.all(settled), new Promise((r) => setTimeout(r, timeoutMs))]);
}
"""

# Wait for MathJax's first typesetting when the page loads MathJax (window.MathJax is first the
# configuration object; MathJax.startup appears once tex-chtml.js has run).
_MATHJAX_JS = """
async (timeoutMs) => {
  if (!window.MathJax) return 'absent';
  const t0 = performance.now();
  while (!(MathJax.startup && MathJax.startup.promise)) {
    if (performance.now() - t0 > timeoutMs) return 'not started';
    await new Promise((r) => setTimeout(r, 50));
  }
  const left = Math.max(0, timeoutMs - (performance.now() - t0));
  return await Promise.race([
    MathJax.startup.promise.then(() => 'done', (e) => 'failed: ' + e),
    new Promise((r) => setTimeout(() => r('timed out'), left)),
  ]);
}
"""

# Everything measured in the page once it has settled; returned as one JSON object.
_MEASURE_JS = r"""
() => {
  const html = document.documentElement;
  const vw = html.clientWidth;  // the layout viewport without a classic scrollbar
  const tol = 1;  // sub-pixel layout rounding
  const shortPath = (el) => {
    const parts = [];
    for (let e = el; e && e !== document.body && parts.length < 4; e = e.parentElement) {
      let s = e.tagName.toLowerCase();
      if (e.id) { parts.unshift(s + '#' + e.id); break; }
      const cls = [...e.classList].filter((c) => !/^(CtxtMenu|mjx-)/.test(c)).slice(0, 2);
      if (cls.length) s += '.' + cls.join('.');
      parts.unshift(s);
    }
    return parts.join(' > ');
  };
  const clipsX = (el) =>
    ['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(el).overflowX);
  const inside = (r) => r.left >= -tol && r.right <= vw + tol;
  // Visible: laid out with a size, not display:none / visibility:hidden / inside a closed
  // <dialog> or <details>. The theme's drawers at phone width are visibility:hidden until opened
  // (the primary sidebar sits off-canvas at left < 0), so they count as invisible, as they are.
  const visible = (el, r) => r.width > 0 && r.height > 0 &&
    el.checkVisibility({visibilityProperty: true});
  // Held: a box between the element and <body> that clips or scrolls sideways and is itself
  // inside the viewport (a wide table in a scroll box). <body> and <html> do not count: content
  // they cut off is lost to the reader.
  const held = (el) => {
    for (let a = el.parentElement; a && a !== document.body && a !== html; a = a.parentElement) {
      if (clipsX(a) && inside(a.getBoundingClientRect())) return true;
    }
    return false;
  };
  const offenders = new Set();
  const report = [];
  let maxRight = 0, minLeft = 0;
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (!visible(el, r) || held(el)) continue;
    maxRight = Math.max(maxRight, r.right);
    minLeft = Math.min(minLeft, r.left);
    if (inside(r)) continue;
    offenders.add(el);
    // report the outermost offenders only: their descendants overflow because they do
    let outer = true;
    for (let a = el.parentElement; a && outer; a = a.parentElement) outer = !offenders.has(a);
    if (outer) report.push({path: shortPath(el), left: Math.round(r.left),
                            right: Math.round(r.right),
                            excess: Math.max(r.right - vw, -r.left)});
  }
  report.sort((a, b) => b.excess - a.excess);

  const images = [...document.images].map((img) => {
    const r = img.getBoundingClientRect();
    return {src: img.getAttribute('src') || '', url: img.currentSrc || img.src,
            complete: img.complete, natural: img.naturalWidth, shown: r.width,
            inOutput: !!img.closest('div.cell_output'), visible: visible(img, r)};
  });

  // MathJax's internal trees also show what the page does not mark as an error: the noundefined
  // extension renders an undefined macro as red text rather than as an merror.
  const mathErrors = [];
  for (const el of document.querySelectorAll('mjx-merror')) {
    const message = el.getAttribute('data-mjx-error') || el.textContent;
    mathErrors.push('TeX error: ' + message.slice(0, 160));
  }
  try {
    for (const item of MathJax.startup.document.math) {
      item.root.walkTree((node) => {
        if (node.isKind('mtext') && node.attributes.get('mathcolor') === 'red') {
          const text = node.childNodes.map((c) => c.getText ? c.getText() : '').join('');
          mathErrors.push('undefined TeX macro ' + text + ' in ' + String(item.math).slice(0, 120));
        }
      });
    }
  } catch (e) { /* no MathJax on the page, or another version's internals */ }

  // TeX still in the text after typesetting: delimiters outside code, scripts and rendered math.
  const leftover = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode: (n) => n.parentElement.closest(
      'pre, code, script, style, textarea, mjx-container, .highlight')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  for (let n = walker.nextNode(); n && leftover.length < 3; n = walker.nextNode()) {
    const m = n.textContent.match(/\\\(.{0,60}?\\\)|\\\[.{0,60}?\\\]|\$\$.{0,60}?\$\$/s);
    if (m) leftover.push(m[0]);
  }

  const hints = ['preconnect', 'dns-prefetch', 'prefetch', 'preload'];
  const links = [...document.querySelectorAll(hints.map((h) => `link[rel~="${h}"]`).join(', '))]
    .map((l) => l.href).filter((h) => h && new URL(h, location.href).origin !== location.origin);

  // the article's own text (a selector list would return the first <p> of the page: the
  // sidebar's, at another size)
  const p = document.querySelector('article p') || document.querySelector('main p') ||
    document.querySelector('p');
  return {
    viewport: vw, scrollWidth: html.scrollWidth, maxRight, minLeft, offenders: report,
    nOffenders: report.length, images, mathErrors, leftover,
    nMath: document.querySelectorAll('mjx-container').length,
    nMathSource: document.querySelectorAll('div.math, span.math').length,
    externalLinks: links,
    bodyFontPx: p ? parseFloat(getComputedStyle(p).fontSize) : null,
    height: html.scrollHeight,
  };
}
"""


# ---------------------------------------------------------------------------------------------
# checking


def check_site(
    html_root: Path,
    widths: Sequence[int] = WIDTHS,
    pages: list[str] | None = None,
    screenshots: Path | None = None,
) -> tuple[list[Problem], pd.DataFrame]:
    """Open every page of ``html_root`` in Chromium at each width and check it.

    ``pages`` are paths relative to ``html_root`` (default: :func:`site_pages`); ``screenshots``
    is a folder for a full-page PNG of each page at 1280 px, named ``<page stem>.png``
    (:func:`screenshot_names`), taken in the 1280 px pass or, when 1280 is not among ``widths``,
    in an extra load.

    Returns the problems and one row per page and width: ``page``, ``width``, ``load_s``,
    ``scroll_width`` and ``max_right_px`` (the document's width and the right edge of the
    rightmost visible element outside a scroll box, CSS px), ``n_overflow`` (outermost
    elements past an edge), ``n_images``, ``n_broken_images``, ``n_math`` (rendered
    formulas), ``n_math_source`` (``div.math``/``span.math`` in the page), ``mathjax`` (done,
    absent, ...), ``n_figures`` and ``figure_scale_min`` (notebook-output images: the smallest
    displayed width / natural width; NaN without one), ``body_font_px`` (the first paragraph's
    font size), ``height_px`` and ``n_problems``.
    """
    import pandas as pd

    root = Path(html_root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no HTML root {root} (build the book first)")
    pages = site_pages(root) if pages is None else [Path(p).as_posix() for p in pages]
    for page in pages:
        if not (root / page).is_file():
            raise FileNotFoundError(f"no page {page} under {root}")
    widths = [int(w) for w in widths]
    if screenshots is not None:
        screenshots = Path(screenshots)
        screenshots.mkdir(parents=True, exist_ok=True)
    sync_playwright = _sync_playwright()
    chromium = find_chromium()

    shots = screenshot_names(pages)
    problems: list[Problem] = []
    rows: list[dict[str, Any]] = []
    with serve(root) as origin, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        try:
            for page in pages:
                shot = None if screenshots is None else screenshots / shots[page]
                for width in widths:
                    at = shot if width == SCREENSHOT_WIDTH else None
                    found, row = _check_page(browser, origin, page, width, at)
                    problems += found
                    rows.append(row)
                if shot is not None and SCREENSHOT_WIDTH not in widths:
                    _check_page(browser, origin, page, SCREENSHOT_WIDTH, shot)
        finally:
            browser.close()
    return problems, pd.DataFrame(rows)


def screenshot_names(pages: Sequence[str]) -> dict[str, str]:
    """``<page stem>.png`` for each page; the page's whole path, "/" as "-", where stems repeat."""
    stems = [Path(p).stem for p in pages]
    names = {}
    for page, stem in zip(pages, stems, strict=True):
        unique = stems.count(stem) == 1
        names[page] = (
            stem if unique else Path(page).with_suffix("").as_posix().replace("/", "-")
        ) + ".png"
    return names


def _check_page(
    browser: Any, origin: str, page: str, width: int, screenshot: Path | None
) -> tuple[list[Problem], dict[str, Any]]:
    """Load one page at one width in a fresh context (no cache, as a reader arriving) and check it.

    ``screenshot``: where to write a full-page PNG of it (None: no screenshot).
    """
    problems: list[Problem] = []

    def add(kind: str, detail: str) -> None:
        problems.append(Problem(page, width, kind, detail))

    local = origin + "/"
    aborted: set[str] = set()

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(local):
            r.continue_()
        else:  # data: and blob: URLs never reach the router; anything else would leave
            aborted.add(url)
            add("network", f"request to {url} (aborted)")
            r.abort()

    def route_ws(ws: Any) -> None:
        add("network", f"websocket to {ws.url} (closed)")
        ws.close()

    def on_console(msg: Any) -> None:
        # a failed load is reported by the response / requestfailed handlers, with its URL
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            add("console", msg.text[:300])

    def on_failed(req: Any) -> None:
        if req.url not in aborted:
            add("network", f"{req.url} failed: {req.failure}")

    def on_response(resp: Any) -> None:
        if resp.status >= 400:
            add("http", f"{resp.status} for {resp.url}")

    context = browser.new_context(
        viewport={"width": width, "height": VIEWPORT_HEIGHT}, device_scale_factor=1
    )
    context.route("**/*", route)
    context.route_web_socket(re.compile(".*"), route_ws)
    tab = context.new_page()
    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: add("console", f"page error: {str(exc)[:300]}"))
    tab.on("requestfailed", on_failed)
    tab.on("response", on_response)
    row: dict[str, Any] = {"page": page, "width": width}
    t0 = time.perf_counter()
    try:
        tab.goto(local + quote(page), wait_until="load", timeout=LOAD_TIMEOUT_S * 1000)
        tab.evaluate("document.fonts.ready.then(() => true)")
        tab.evaluate(_LOAD_IMAGES_JS, IMAGE_TIMEOUT_S * 1000)
        mathjax = tab.evaluate(_MATHJAX_JS, MATHJAX_TIMEOUT_S * 1000)
        row["load_s"] = round(time.perf_counter() - t0, 2)
        tab.evaluate("window.scrollTo(0, 0)")  # bounding boxes are relative to the viewport
        m = tab.evaluate(_MEASURE_JS)
        if screenshot is not None:
            tab.screenshot(path=str(screenshot), full_page=True)
    except Exception as exc:  # a page that cannot be loaded or measured is one problem
        add("load", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        row["n_problems"] = len(problems)
        return problems, row
    finally:
        context.close()
    _judge(m, mathjax, add)
    figures = [
        i["shown"] / i["natural"]
        for i in m["images"]
        if i["inOutput"] and i["natural"] > 0 and i["visible"]
    ]
    row.update(
        scroll_width=m["scrollWidth"],
        max_right_px=round(m["maxRight"]),
        n_overflow=m["nOffenders"],
        n_images=len(m["images"]),
        n_broken_images=sum(not (i["complete"] and i["natural"] > 0) for i in m["images"]),
        n_math=m["nMath"],
        n_math_source=m["nMathSource"],
        mathjax=mathjax,
        n_figures=len(figures),
        figure_scale_min=round(min(figures), 3) if figures else math.nan,
        body_font_px=m["bodyFontPx"],
        height_px=m["height"],
        n_problems=len(problems),
    )
    return problems, row


def _judge(m: dict[str, Any], mathjax: str, add: Callable[[str, str], None]) -> None:
    """Turn the page's measurements into problems."""
    vw = m["viewport"]
    if m["scrollWidth"] > vw:
        add(
            "overflow",
            f"the page scrolls sideways: document width {m['scrollWidth']} px > viewport {vw} px",
        )
    for o in m["offenders"][:MAX_OFFENDERS]:
        add("overflow", f"{o['path']} spans {o['left']}..{o['right']} px (viewport 0..{vw})")
    if m["nOffenders"] > MAX_OFFENDERS:
        add(
            "overflow", f"... and {m['nOffenders'] - MAX_OFFENDERS} more elements past the viewport"
        )
    for img in m["images"]:
        if not (img["complete"] and img["natural"] > 0):
            add("image", f"image not loaded: {img['src'] or img['url'] or '(no src)'}")
    if mathjax not in ("done", "absent"):
        add("mathjax", f"MathJax {mathjax}")
    for err in m["mathErrors"]:
        add("mathjax", err)
    if m["nMathSource"] and not m["nMath"]:
        add("mathjax", f"{m['nMathSource']} math elements but no rendered formula (mjx-container)")
    for text in m["leftover"]:
        add("mathjax", f"TeX left unrendered in the text: {text}")
    for href in m["externalLinks"]:
        add("network", f"<link> to another origin: {href}")


# ---------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m negatives.pages",
        description="Check the built book's pages in Chromium: overflow, images, MathJax, network.",
    )
    parser.add_argument("html_root", type=Path, help="the HTML root, e.g. _build/html")
    parser.add_argument(
        "--width",
        type=int,
        action="append",
        help="viewport width in CSS px (repeatable; default 1280 and 390)",
    )
    parser.add_argument(
        "--page",
        action="append",
        help="a page relative to the root (repeatable; default: every page)",
    )
    parser.add_argument(
        "--screenshots", type=Path, help="write a full-page PNG of each page at 1280 px here"
    )
    return parser


def format_report(problems: Sequence[Problem], table: pd.DataFrame) -> str:
    """The measurements as a table of pages x widths, then the problems, as printed by the CLI."""
    import pandas as pd

    with pd.option_context(
        "display.width", 200, "display.max_columns", None, "display.max_colwidth", 48
    ):
        lines = [table.to_string(index=False) if len(table) else "(no pages)", ""]
    if problems:
        lines.append(f"{len(problems)} problems:")
        lines += [f"  {p}" for p in problems]
    else:
        lines.append(f"no problems on {len(set(table.get('page', [])))} pages")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        problems, table = check_site(
            args.html_root,
            widths=args.width or WIDTHS,
            pages=args.page,
            screenshots=args.screenshots,
        )
    except (BrowserMissing, FileNotFoundError) as exc:
        print(f"negatives.pages: {exc}", file=sys.stderr)
        return 2
    print(format_report(problems, table))
    if args.screenshots is not None:
        print(
            f"screenshots of {len(set(table.get('page', [])))} pages at {SCREENSHOT_WIDTH} px"
            f" in {args.screenshots}"
        )
    print(f"checked in {time.perf_counter() - t0:.1f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
