"""The docs site, as a reader gets it: built from the notebooks by `tools/build_docs.py` (offline), then loaded from a
local HTTP server in headless Chromium (Debian's `chromium`, driven by Playwright).

The site is built once per test session into a temporary folder (pytest-xdist workers share it through a lock); the
nbdev pre-processing cache is the one `python tools/build_docs.py` uses (build/docs-cache, keyed by content).
Screenshots of the home page, the DPO page and a figure are left in build/docs-screenshots/ for a person to look at.
"""
import functools, http.server, os, re, shutil, subprocess, sys, threading
from html.parser import HTMLParser
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
SHOTS = ROOT / "build" / "docs-screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The sidebar section of each block of notebooks, written out here independently of the build script.
SECTION_OF_BLOCK = {"0": "Foundations", "1": "Reward models", "2": "Offline preference losses",
                    "3": "Offline reward-weighted methods", "4": "Online RL", "5": "Applications",
                    "6": "Inference-time methods", "9": "Comparisons and benchmarks"}
SECTION_ORDER = list(SECTION_OF_BLOCK.values()) + ["Command line", "More"]


def expected_section(nb: Path) -> str:
    if nb.name.startswith("99"): return "Command line"
    return SECTION_OF_BLOCK.get(nb.name[0], "More") if re.match(r"\d\d[a-z]?_", nb.name) else "More"


def expected_page(nb: Path) -> str:
    return re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.name.lower()).replace(".ipynb", ".html")


def page_notebooks():
    return sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith(("_", ".")))


# ---------------------------------------------------------------------------------------------------------------
# Building and serving

def _build(out: Path, work: Path) -> None:
    cmd = [sys.executable, "tools/build_docs.py", "--out", str(out), "--work", str(work), "--no-quarto-config"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    log = r.stdout + r.stderr
    (out.parent / "docs-build.log").write_text(log)
    if r.returncode != 0 or not (out / "index.html").exists():
        (out.parent / "docs-build.failed").write_text(log)
        pytest.fail(f"tools/build_docs.py failed (exit {r.returncode}):\n{log[-6000:]}")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    "The built site (one build per session, shared by the xdist workers)."
    from filelock import FileLock
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"): base = base.parent
    out = base / "docs-site"
    with FileLock(str(base / "docs-site.lock")):
        if (base / "docs-build.failed").exists():
            pytest.fail("the docs build failed (in another worker):\n" + (base / "docs-build.failed").read_text()[-6000:])
        if not (out / "index.html").exists(): _build(out, base / "docs-work")
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture(scope="module")
def server(site):
    "The site on a local HTTP server, as `bash tools/serve_docs.sh` serves it; yields its base URL."
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


def _chromium() -> str:
    "Debian's chromium; a skip with the reason only where it is not installed and this is not CI."
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        exe, why = None, "the Python package playwright is not installed (pip install -e '.[docs]')"
    else:
        why = "Debian's chromium is not installed (tools/setup.sh installs it with apt-get)"
    if exe: return exe
    if os.environ.get("CI"): pytest.fail(f"cannot run the browser test in CI: {why}")
    pytest.skip(why)


# ---------------------------------------------------------------------------------------------------------------
# The built HTML, read as files

class _Page(HTMLParser):
    "Ids, links, assets and the sidebar of one HTML page."

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.links, self.assets, self.sidebar, self._nav, self._cap = set(), [], [], [], 0, None
        self.code_links, self._a = [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: self.ids.add(a["id"])
        if tag == "nav" and "bd-docs-nav" in (a.get("class") or ""): self._nav = 1
        elif tag == "nav" and self._nav: self._nav += 1
        if tag == "a" and a.get("href"):
            self.links.append(a["href"]); self._a = a["href"]
            if self._nav: self.sidebar.append((self._cap, a["href"]))
        if tag == "code" and self._a: self.code_links.append(self._a)
        if tag in ("script", "img", "iframe") and a.get("src"): self.assets.append(a["src"])
        if tag == "link" and a.get("href") and a.get("rel") in ("stylesheet", "icon", "preload"): self.assets.append(a["href"])
        if tag == "span" and self._nav and "caption-text" in (a.get("class") or ""): self._cap = ""

    def handle_endtag(self, tag):
        if tag == "nav" and self._nav: self._nav -= 1
        if tag == "a": self._a = None

    def handle_data(self, data):
        if self._cap == "": self._cap = data.strip()


@pytest.fixture(scope="module")
def pages(site) -> dict[str, _Page]:
    return {f.name: _Page(f.read_text()) for f in site.glob("*.html")}


def test_build_reports_no_problems(site):
    """No Sphinx warning, and no cell that nbdev had to run for the API entries failed (a page would miss entries).
    The docs build runs exported cells, import-only cells and show_doc cells: keep imports in cells of their own."""
    log = (site.parent / "docs-build.log").read_text()
    problems = [l for l in log.splitlines() if "WARNING" in l or "sphinx:" in l]
    assert not problems, "tools/build_docs.py reported:\n" + "\n".join(problems)


def test_every_notebook_is_a_page_in_its_section(site, pages):
    "The sidebar is made from the notebook file names: every notebook, in its block's section, in file order."
    nbs = page_notebooks()
    assert len(nbs) > 5 and (NBS / "20_dpo.ipynb") in nbs
    for nb in nbs: assert (site / expected_page(nb)).exists(), f"{nb.name} has no page {expected_page(nb)}"
    side = [(cap, href) for cap, href in pages["index.html"].sidebar if cap is not None and not href.startswith("#")]
    want = [(expected_section(nb), expected_page(nb)) for nb in nbs if nb.name != "index.ipynb"]
    want.sort(key=lambda t: SECTION_ORDER.index(t[0]))  # stable: file order within a section
    got = [(cap, href) for cap, href in side if href != "api.html"]
    assert got == want, f"sidebar {got}\nexpected {want}"
    assert ("Reference", "api.html") in side
    assert ("Offline preference losses", "dpo.html") in side and ("Foundations", "core.html") in side


def test_links_resolve_and_nothing_loads_from_outside(site, pages):
    "Every link inside the site reaches a page and an anchor that exist; no script, style or image comes from outside."
    broken, external = [], []
    for name, p in pages.items():
        for href in p.links:
            if re.match(r"^[a-z][a-z0-9+.-]*:", href) or href.startswith("//"): continue  # external pages are fine
            path, _, frag = href.partition("#")
            target = path.split("?")[0] or name
            if not (site / target).exists(): broken.append(f"{name}: {href} (no such file)")
            elif frag and target in pages and frag not in pages[target].ids: broken.append(f"{name}: {href} (no anchor)")
        external += [f"{name}: {a}" for a in p.assets if re.match(r"^(https?:)?//", a)]
    assert not broken, "broken links:\n" + "\n".join(broken)
    assert not external, "assets loaded from outside the site:\n" + "\n".join(external)
    for page in pages:
        html = (site / page).read_text()
        assert "cdn.plot.ly" not in html and "cdnjs" not in html and "jsdelivr" not in html, f"{page} names a CDN"


def test_backticked_names_link_to_api_entries(site, pages):
    "nbdev's doc links: a backticked name in the prose links to its API entry, on this page or another."
    dpo = pages["dpo.html"]
    api_links = [h for h in dpo.code_links if re.fullmatch(r"[\w-]+\.html#[\w.]+", h) or re.fullmatch(r"#[\w.]+", h)]
    assert "#dpo_loss" in api_links or "dpo.html#dpo_loss" in api_links, api_links
    assert any(h.startswith("train.html#") or h.startswith("data.html#") for h in api_links), api_links
    for h in api_links:
        path, _, frag = h.partition("#")
        assert f'id="{frag}" class="api-anchor"' in (site / (path or "dpo.html")).read_text(), f"{h} is not an API entry"


def test_api_entry_of_dpo_loss(site):
    html = (site / "dpo.html").read_text()
    i = html.find('id="dpo_loss" class="api-anchor"')
    assert i >= 0, "no API entry for dpo_loss"
    entry = html[i:i + 6000]
    assert re.search(r"<h[2-6][^>]*>dpo_loss", entry), "the entry has no heading"
    assert "source</a>" in entry and "def" in entry and "policy_chosen_logps" in entry and "label_smoothing" in entry
    api = (site / "api.html").read_text()
    assert 'href="dpo.html#dpo_loss"' in api, "the API reference page does not list dpo_loss"


def test_algorithm_table_links_to_the_pages(site):
    "Each registered algorithm's row in the home page's algorithm table links to its page: two clicks at most."
    from rlhf_ref.algos import algorithms
    html = (site / "index.html").read_text()
    sec = re.search(r'<section id="algorithms">(.*?)</section>', html, re.S)
    assert sec, "the home page has no Algorithms section"
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", sec.group(1), re.S)]
    by_name = {re.sub(r"<[^>]+>", "", r[0]).strip(): r for r in rows if r}
    missing = sorted(set(algorithms()) - set(by_name))
    assert not missing, f"registered algorithms without a row in the table: {missing}"
    for name in algorithms():
        page_cell = by_name[name][-2]
        hrefs = re.findall(r'href="([\w.-]+\.html)(?:#[^"]*)?"', page_cell)
        assert hrefs and all((site / h).exists() for h in hrefs), f"{name}: no link to a page in {page_cell!r}"


def test_links_to_notebooks_and_doc_urls_become_page_links():
    "How the notebooks link pages: to the notebook file (Jupyter, Quarto) or to the published docs URL; both work here."
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_docs", ROOT / "tools" / "build_docs.py")
    bd = importlib.util.module_from_spec(spec); spec.loader.exec_module(bd)
    cfg = bd.project_config()
    link = bd.Linker(cfg, {"20_dpo.ipynb": "dpo", "index.ipynb": "index"})
    assert link("[DPO](20_dpo.ipynb)") == "[DPO](dpo.html)"
    assert link("see [the loss](nbs/20_dpo.ipynb#the-loss).") == "see [the loss](dpo.html#the-loss)."
    assert link(f"[`dpo_loss`]({cfg['doc_url']}dpo.html#dpo_loss)") == "[`dpo_loss`](dpo.html#dpo_loss)"
    assert link('<a href="20_dpo.ipynb">x</a>') == '<a href="dpo.html">x</a>'
    assert link("[paper](https://arxiv.org/abs/2305.18290) [x](99_unknown.ipynb)") == \
        "[paper](https://arxiv.org/abs/2305.18290) [x](99_unknown.ipynb)"


def test_quarto_configuration_is_current():
    "nbs/_quarto.yml, nbdev.yml and the grouped sidebar.yml match pyproject.toml and the notebooks (for nbdev-preview)."
    r = subprocess.run([sys.executable, "tools/build_docs.py", "--check-quarto"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr + "\nrun: python tools/build_docs.py --quarto-config"


# ---------------------------------------------------------------------------------------------------------------
# In the browser

def test_site_in_chromium(site, server):
    exe = _chromium()
    from playwright.sync_api import sync_playwright
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = []  # console errors, uncaught exceptions, failed requests: on every page visited
    figure_pages = sorted((f.name for f in site.glob("*.html") if 'class="plotly-figure"' in f.read_text()),
                          key=lambda n: (n == "dpo.html", n))  # the DPO page last: its figure is the screenshot
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: m.type == "error" and problems.append(f"console error on {page.url}: {m.text}"))
        page.on("pageerror", lambda e: problems.append(f"uncaught exception on {page.url}: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
        try:
            # the home page renders: title, summary, the algorithm table
            page.goto(server + "index.html", wait_until="load")
            assert page.locator("article h1").first.inner_text().strip().startswith("rlhf_ref")
            assert page.locator("article table").filter(has_text="DPO").count() >= 1, "no algorithm table"
            page.screenshot(path=str(SHOTS / "home.png"))

            # the navigation reaches the DPO page in one click from the home page's sidebar
            link = page.locator("nav.bd-docs-nav a[href='dpo.html']")
            assert link.count() == 1, "the sidebar has no link to the DPO page"
            link.click()
            page.wait_for_url("**/dpo.html")
            assert "DPO" in page.locator("article h1").first.inner_text()

            # the math is typeset by the site's own MathJax: every math element holds MathJax's output
            page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000)
            page.evaluate("MathJax.startup.promise")
            n_math = page.locator("article .math").count()
            assert n_math > 10, f"only {n_math} math elements on the DPO page"
            raw = page.evaluate("[...document.querySelectorAll('article .math')]"
                                ".filter(e => !e.querySelector('mjx-container')).length")
            assert raw == 0, f"{raw} of {n_math} math elements were left untypeset"
            assert "$$" not in page.locator("article").inner_text()

            # the API entry of dpo_loss: reachable by its nbdev anchor, heading and signature visible
            page.goto(server + "dpo.html#dpo_loss", wait_until="load")
            page.wait_for_timeout(300)
            heading, heading_top = page.evaluate("""() => {
                const a = document.getElementById('dpo_loss');
                const h = [...document.querySelectorAll('h2,h3,h4,h5,h6')].find(
                    h => a.compareDocumentPosition(h) & Node.DOCUMENT_POSITION_FOLLOWING);
                return [h.textContent, h.getBoundingClientRect().top]; }""")
            assert heading.strip().startswith("dpo_loss"), heading
            assert 0 <= heading_top < 400, f"#dpo_loss did not scroll to its entry (heading at {heading_top}px)"
            assert page.locator("pre:has-text('def dpo_loss(')").first.is_visible()
            page.goto(server + "dpo.html", wait_until="load")
            page.evaluate("MathJax.startup.promise")
            page.wait_for_timeout(300)
            page.screenshot(path=str(SHOTS / "dpo.png"))

            # search, offline: Sphinx's index finds the API entry
            page.goto(server + "search.html?q=dpo_loss", wait_until="load")
            page.locator("#search-results a[href*='dpo.html']").first.wait_for(timeout=20000)
            # Sphinx then fetches each result page for its summary; leaving before those finish aborts them
            # (net::ERR_ABORTED), which the request check below would report as a failure
            page.wait_for_load_state("networkidle", timeout=20000)

            # interactive plotly figures, drawn from the stored JSON by the site's plotly.js
            for name in figure_pages:
                page.goto(server + name, wait_until="load")
                figs = page.locator(".plotly-figure")
                for i in range(figs.count()):
                    figs.nth(i).locator("svg.main-svg").first.wait_for(state="attached", timeout=20000)
                    assert figs.nth(i).locator(".plot-container .modebar, .modebar-container").count() >= 1  # interactive
            if figure_pages:
                figs.first.scroll_into_view_if_needed()
                page.screenshot(path=str(SHOTS / "figure.png"))
        finally:
            browser.close()
    assert not problems, "the browser reported:\n" + "\n".join(problems)
    assert figure_pages, ("no page holds a plotly figure: no notebook in nbs/ has a stored plotly output (run the "
                          "notebooks with rlhf_ref.plots.setup_plotly() and save them with their outputs)")
