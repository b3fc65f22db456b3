"""Build the documentation site from the notebooks, offline: `python tools/build_docs.py` writes `_site/`.

Two stages, no Quarto:

1. **nbdev's own pre-processing**, the processors `nbdev-proc-nbs` runs (`nbdev.processors.FilterDefaults`): hidden and
   exported cells dropped, `show_doc` cells added and executed, directives applied, backticked names linked to their
   API entries. Each notebook is processed in a worker process and cached under `--work`, keyed on the notebook, the
   package sources and this script, so a rebuild only re-processes what changed.
2. **Sphinx with myst-nb** renders the processed notebooks from their *stored* outputs (nothing is executed), with a
   sidebar grouped by the notebook blocks (`0x` foundations, `1x` reward models, ...), generated from the file names.
   Plotly figures are drawn from their JSON bundle by the local `plotly.min.js` of the plotly package, and LaTeX is
   typeset by MathJax 3 installed from npm (`docs/package.json`): the site loads nothing from outside itself.

It also keeps nbdev's Quarto configuration current (`nbs/_quarto.yml`, `nbs/nbdev.yml` and a grouped `nbs/sidebar.yml`),
so that `nbdev-preview` and `nbdev-docs` work for whoever has Quarto.

    python tools/build_docs.py                      # build _site/ (serve it: bash tools/serve_docs.sh)
    python tools/build_docs.py --out DIR --work DIR # elsewhere (the tests build into a temporary folder)
    python tools/build_docs.py --quarto-config      # only refresh the Quarto files in nbs/
    python tools/build_docs.py --check-quarto       # exit 1 if those files are out of date
"""
from __future__ import annotations
import argparse, copy, hashlib, inspect, json, os, re, shutil, subprocess, sys, time, tomllib, warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD_VERSION = "1"  # bump to invalidate the cache of pre-processed notebooks (it also keys on the worker's code)

# Sidebar sections, in the order they appear, and the notebook file names each takes (the house layout: blocks of ten).
SECTIONS = [
    ("Foundations", r"0\d"),
    ("Reward models", r"1\d"),
    ("Offline preference losses", r"2\d"),
    ("Offline reward-weighted methods", r"3\d"),
    ("Online RL", r"4\d"),
    ("Applications", r"5\d"),
    ("Inference-time methods", r"6\d"),
    ("Comparisons and benchmarks", r"9[0-8]"),
    ("Command line", r"99"),
]
OTHER_SECTION = "More"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def log(*a):
    print("build_docs:", *a, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Configuration and the notebook list

def project_config() -> dict:
    "The settings the site needs, from pyproject.toml (nbdev's [tool.nbdev] and [project])."
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    nbd, proj = py.get("tool", {}).get("nbdev", {}), py.get("project", {})
    repo = proj.get("urls", {}).get("Repository", "")
    doc_url = proj.get("urls", {}).get("Documentation", "")
    lib = nbd.get("lib_path", proj.get("name", "lib"))
    return {"name": proj.get("name", lib), "description": proj.get("description", ""), "repo": repo.rstrip("/"),
            "doc_url": doc_url.rstrip("/") + "/" if doc_url else "", "lib_path": lib,
            "nbs_path": nbd.get("nbs_path", "nbs")}


def page_name(nb: Path) -> str:
    "The page a notebook becomes: nbdev's rule (`nbpath2html`), so URLs match the Quarto site: 20_dpo.ipynb -> dpo."
    return re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.name.lower()).removesuffix(".ipynb")


def section_of(nb: Path) -> str:
    "The sidebar section of a notebook, from its file name: `20_dpo` -> Offline preference losses."
    m = re.match(r"(\d\d)[a-z]?_", nb.name)
    if m:
        for title, pat in SECTIONS:
            if re.fullmatch(pat, m.group(1)): return title
    return OTHER_SECTION


def notebooks(nbs: Path) -> list[Path]:
    "The notebooks that become pages: every *.ipynb in `nbs`, not hidden (`_`, `.`) ones, in file-name order."
    return sorted(p for p in nbs.glob("*.ipynb") if not p.name.startswith(("_", ".")))


def nav(nbl: list[Path]) -> list[tuple[str, list[Path]]]:
    "Sidebar sections with their notebooks, empty sections left out; index.ipynb is the home page, not listed."
    groups: dict[str, list[Path]] = {}
    for nb in sorted(nbl):
        if nb.name != "index.ipynb": groups.setdefault(section_of(nb), []).append(nb)
    order = [t for t, _ in SECTIONS] + [OTHER_SECTION]
    return [(t, groups[t]) for t in order if t in groups]


# ---------------------------------------------------------------------------------------------------------------
# nbdev's Quarto configuration (for users who have Quarto)

def quarto_sidebar(nbs: Path) -> str:
    lines = ["website:", "  sidebar:", "    contents:", "      - index.ipynb"]
    for title, nbl in nav(notebooks(nbs)):
        lines += [f"      - section: {title}", "        contents:"] + [f"          - {nb.name}" for nb in nbl]
    return "# Generated by tools/build_docs.py from the notebook file names (pyproject.toml sets custom_sidebar).\n" \
           + "\n".join(lines) + "\n"


def quarto_files(nbs: Path) -> dict[Path, str]:
    "What nbs/_quarto.yml, nbs/nbdev.yml (nbdev's own templates) and nbs/sidebar.yml should hold."
    from nbdev.quarto import _quarto_yml, _nbdev_yml
    from nbdev.config import get_config
    cfg = get_config()
    vals = {k: cfg[k] for k in ["title", "description", "branch", "git_url", "doc_host", "doc_baseurl"]}
    vals["doc_path"] = cfg.doc_path.name
    return {nbs / "_quarto.yml": _quarto_yml, nbs / "nbdev.yml": _nbdev_yml.format(**vals),
            nbs / "sidebar.yml": quarto_sidebar(nbs)}


def write_quarto_files(nbs: Path, check: bool = False) -> bool:
    "Write the Quarto files where they differ (or, with `check`, only say which differ). True when all were current."
    stale = [p for p, text in quarto_files(nbs).items() if not p.exists() or p.read_text() != text]
    if check:
        for p in stale: log(f"{p.relative_to(ROOT)} is out of date: run `python tools/build_docs.py --quarto-config`")
        return not stale
    for p in stale: p.write_text(quarto_files(nbs)[p]); log(f"wrote {p.relative_to(ROOT)}")
    return not stale


# ---------------------------------------------------------------------------------------------------------------
# Stage 1: nbdev's pre-processing, one notebook per worker task

def _proc_worker(src: str, dst: str) -> tuple[list[str], float]:
    "Run nbdev's docs processors on notebook `src`, write the result to `dst`; the cells that failed, the seconds taken."
    t0 = time.time()
    os.environ["IN_TEST"] = "1"  # what nbdev-proc-nbs sets: notebooks may skip heavy work under it
    from fastcore.nbio import read_nb, write_nb
    from nbdev.processors import FilterDefaults, exec_show_docs
    from nbdev.config import get_config
    failures: list[str] = []

    class exec_show_docs_tolerant(exec_show_docs):
        # What runs: exported cells, import-only cells and show_doc cells, which is all that show_doc needs (the house
        # style keeps imports in cells of their own). nbdev would also run any cell that imports something among other
        # code, and cells flagged `#| slow` or `#| cuda`: whole training runs. A cell that fails keeps its stored
        # outputs and is reported, and the page's other API entries are still rendered (nbdev stops the whole build).
        def __call__(self, cell):
            if cell.cell_type == "code" and not _docs_needs(cell, skip): return
            saved = copy.deepcopy(cell.get("outputs", []))
            try: super().__call__(cell)
            except Exception as e:
                cause = e.__cause__ or e
                first = (cell.source or "").strip().splitlines()[:1]
                failures.append(f"cell {cell.idx_} ({first[0][:60] if first else ''}): {type(cause).__name__}: {cause}")
                cell["outputs"] = [] if (cell.source or "").lstrip().startswith("show_doc") else saved
                self.k.exc = None  # else nbdev re-raises it at every later cell

    class Filter(FilterDefaults):
        def base_procs(self):
            return [exec_show_docs_tolerant if p is exec_show_docs else p for p in super().base_procs()]

    skip = set(str(get_config().get("tst_flags", "")).split())
    nb = read_nb(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbdev warns about cells mixing imports and code; failures are reported
        Filter()(nb)
    tmp = Path(dst).with_suffix(f".tmp{os.getpid()}")
    write_nb(nb, tmp); tmp.replace(dst)  # atomic: builds may share the cache
    return failures, time.time() - t0


def _docs_needs(cell, skip: set) -> bool:
    "Whether the docs build runs this code cell: exported code, imports alone, or show_doc; never a `skip` flag."
    import ast
    d = set(getattr(cell, "directives_", {}) or {})
    if d & skip or not cell.source: return False
    if d & {"export", "exports", "exporti", "exec_doc"}: return True
    try: trees = cell.parsed_()
    except Exception: return False
    if not trees: return False
    if all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees): return True
    return any(isinstance(t, ast.Expr) and isinstance(t.value, ast.Call) and getattr(t.value.func, "id", "") == "show_doc"
               for t in trees)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha1()
    for p in parts: h.update(p); h.update(b"\0")
    return h.hexdigest()


def preprocess(nbl: list[Path], cache: Path, cfg: dict, jobs: int) -> tuple[dict[Path, Path], dict[str, list[str]]]:
    "Processed copies of the notebooks (from the cache where current) and the cells that failed, by notebook name."
    import nbdev
    cache.mkdir(parents=True, exist_ok=True)
    lib = ROOT / cfg["lib_path"]
    common = _digest(BUILD_VERSION.encode(), nbdev.__version__.encode(), (ROOT / "pyproject.toml").read_bytes(),
                     inspect.getsource(_proc_worker).encode(), inspect.getsource(_docs_needs).encode(),
                     *(p.read_bytes() for p in sorted(lib.glob("*.py"))))
    out, todo, failures = {}, [], {}
    for nb in nbl:
        key = _digest(common.encode(), nb.read_bytes())
        dst, keyf = cache / f"{nb.stem}-{key[:16]}.ipynb", cache / f"{nb.stem}-{key[:16]}.json"
        out[nb] = dst
        if dst.exists() and keyf.exists():
            if fails := json.loads(keyf.read_text()): failures[nb.name] = fails
        else: todo.append((nb, dst, keyf))
    log(f"nbdev pre-processing: {len(todo)} of {len(nbl)} notebooks ({len(nbl) - len(todo)} cached), {jobs} workers")
    if todo:
        # the workers import this file as the module `build_docs` (spawned processes cannot see `__main__`'s functions)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import importlib
        worker = importlib.import_module("build_docs")._proc_worker
        with ProcessPoolExecutor(max(1, min(jobs, len(todo))), mp_context=get_context("spawn")) as ex:
            futs = [(nb, dst, keyf, ex.submit(worker, str(nb), str(dst))) for nb, dst, keyf in todo]
            for nb, dst, keyf, fut in futs:
                fails, secs = fut.result()
                log(f"  {nb.name}: {secs:.1f}s")
                if fails: failures[nb.name] = fails
                keyf.write_text(json.dumps(fails))
    for old in cache.glob("*.ipynb"):  # entries of older versions of the notebooks
        if old not in out.values() and time.time() - old.stat().st_mtime > 3600:
            old.unlink(missing_ok=True); old.with_suffix(".json").unlink(missing_ok=True)
    return out, failures


# ---------------------------------------------------------------------------------------------------------------
# Stage 2a: processed notebook -> a notebook myst-nb renders as Quarto would

_re_directive = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")


def split_directives(src: str) -> tuple[dict[str, str], str]:
    "Leading `#| key: value` lines of a code cell as a dict, and the code without them."
    lines, d = src.splitlines(), {}
    i = 0
    while i < len(lines) and (m := _re_directive.match(lines[i])):
        d[m.group(1).lower()] = m.group(2).strip().strip('"').strip("'"); i += 1
    return d, "\n".join(lines[i:]).strip("\n")


class Linker:
    "Rewrites links for the offline site: nbdev's absolute doc links and links to notebooks become relative page links."

    def __init__(self, cfg: dict, pages: dict[str, str]):
        self.doc_url, self.pages = cfg["doc_url"], pages  # pages: notebook file name -> page name

    def _target(self, url: str) -> str:
        if self.doc_url and url.startswith(self.doc_url): url = url[len(self.doc_url):] or "index.html"
        m = re.fullmatch(r"(?:\./|nbs/|\.\./nbs/)?([\w.-]+\.ipynb)(#.*)?", url)
        if m and m.group(1) in self.pages: url = self.pages[m.group(1)] + ".html" + (m.group(2) or "")
        return url

    def __call__(self, text: str) -> str:
        text = re.sub(r"(\]\()(<?)([^)\s>]+)", lambda m: m.group(1) + m.group(2) + self._target(m.group(3)), text)
        return re.sub(r'(href=")([^"]+)', lambda m: m.group(1) + self._target(m.group(2)), text)


_re_source = re.compile(r'\[source\]\(([^)\s]+)\)(\{[^}]*\})?')
_re_api_heading = re.compile(r"^(#{2,6})\s+(.+?)\s*$", re.M)


def api_entry(md: str, link: Linker, summaries: dict[str, str], page: str) -> str:
    """A `show_doc` output as page markdown: an anchor with nbdev's id (`#dpo_loss`, what doc links point to), the
    heading (so the entry is in the page's table of contents), a link to the source, signature and parameter table."""
    md = re.sub(r"^\s*---\s*\n", "", md)
    src = _re_source.search(md)
    if src: md = md[:src.start()] + md[src.end():]
    head = _re_api_heading.search(md)
    if not head: return link(md)
    name = head.group(2).replace("\\_", "_")
    anchor = name.lower()
    source = (f'<div class="api-source"><a class="reference external" href="{src.group(1)}" target="_blank" '
              'rel="noopener">source</a></div>\n\n') if src else ""
    body = md[head.end():].strip()
    m = re.search(r"^\*(.+)\*\s*$", body, re.M)  # the one-line docstring, italic under the signature
    summaries[f"{page}.html#{anchor}"] = m.group(1) if m else ""
    return (f'<div id="{anchor}" class="api-anchor"></div>\n\n{head.group(1)} {name}\n\n{source}'
            f'{link(body)}\n')


def plotly_html(fig: dict, n: int) -> str:
    "A figure drawn from its JSON by the site's own plotly.js (`_static/plotly-figures.js`), instead of a CDN copy."
    data = json.dumps(fig, separators=(",", ":")).replace("</", "<\\/")
    height = (fig.get("layout") or {}).get("height") or 450  # plotly's default height
    return (f'<div class="plotly-figure" id="plotly-figure-{n}" style="height:{int(height)}px"></div>\n'
            f'<script type="application/json" class="plotly-figure-data" data-for="plotly-figure-{n}">{data}</script>\n')


def convert_outputs(outputs: list, link: Linker, counter: list) -> list:
    res = []
    for o in outputs:
        o = copy.deepcopy(o)
        data = o.get("data", {})
        html = data.get("text/html", "")
        html = "".join(html) if isinstance(html, list) else html
        if PLOTLY_MIME not in data and "window.PlotlyConfig" in html:
            continue  # plotly's notebook set-up output: it loads plotly.js (from a CDN); the site serves its own
        if PLOTLY_MIME in data:
            counter[0] += 1
            fig = data[PLOTLY_MIME]
            o["data"] = {"text/html": plotly_html(fig, counter[0]), "text/plain": "<plotly figure>"}
        elif "text/markdown" in data:
            md = data["text/markdown"]
            data["text/markdown"] = link("".join(md) if isinstance(md, list) else md)
        res.append(o)
    return res


def callouts(md: str) -> str:
    "Quarto's callouts (`::: {.callout-note}` ... `:::`) as MyST admonitions (`:::{note}` ... `:::`)."
    kinds = {"note": "note", "tip": "tip", "warning": "warning", "important": "important", "caution": "caution"}
    return re.sub(r"^(:{3,})\s*\{\.callout-(\w+)[^}]*\}\s*$",
                  lambda m: f"{m.group(1)}{{{kinds.get(m.group(2), 'note')}}}", md, flags=re.M)


def md_cell(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def frontmatter(src: str) -> dict:
    import yaml
    m = re.match(r"^\s*---\s*\n(.*?)\n---\s*$", src, re.S)
    return (yaml.safe_load(m.group(1)) or {}) if m else {}


def convert(nb: dict, page: str, link: Linker, summaries: dict[str, str]) -> tuple[dict, dict]:
    "A processed notebook as myst-nb input, and its frontmatter (title, description)."
    cells, fm, counter = [], {}, [0]
    for c in nb["cells"]:
        src = "".join(c.get("source", "")) if isinstance(c.get("source", ""), list) else c.get("source", "")
        if c["cell_type"] == "raw":
            f = frontmatter(src)
            if f and not fm:
                fm = f
                desc = f.get("description", "")
                cells.append(md_cell(f"# {f.get('title', page)}\n\n" + (f"{{.page-lead}}\n{link(desc)}\n"
                                                                       if desc else "")))
            continue
        if c["cell_type"] == "markdown":
            if src.strip().startswith("<!-- WARNING: THIS FILE WAS AUTOGENERATED"): continue
            cells.append(md_cell(link(callouts(src)))); continue
        if c["cell_type"] != "code": continue
        d, code = split_directives(src)
        if d.get("include") == "false": continue
        outputs = [] if d.get("output") == "false" else convert_outputs(c.get("outputs", []), link, counter)
        if d.get("output") == "asis":  # Quarto inserts such output as markdown: show_doc's API entries
            for o in outputs:
                md = o.get("data", {}).get("text/markdown")
                if md: cells.append(md_cell(api_entry(md, link, summaries, page)))
            if d.get("echo") != "false" and code:
                cells.append({"cell_type": "code", "metadata": {}, "source": code, "outputs": [],
                              "execution_count": None})
            continue
        if not code and not outputs: continue
        tags = ["remove-input"] if d.get("echo") == "false" or not code else []
        cell = {"cell_type": "code", "metadata": {"tags": tags} if tags else {}, "source": code, "outputs": outputs,
                "execution_count": None}
        if d.get("code-fold") in ("show", "true"):  # nbdev's `#| exports` cells: the source, folded
            opened = " open" if d["code-fold"] == "show" else ""
            cells += [md_cell(f'<details class="code-fold"{opened}><summary>{d.get("code-summary", "Code")}</summary>'),
                      cell, md_cell("</details>")]
        else: cells.append(cell)
    if not fm: cells.insert(0, md_cell(f"# {page}"))  # a notebook without a title: its page still needs one
    for i, c in enumerate(cells): c["id"] = f"c{i}"
    meta = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "pygments_lexer": "ipython3"}}
    return {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}, fm


def toctree_cell(sections: list[tuple[str, list[str]]]) -> dict:
    "Hidden toctrees, one per sidebar section, appended to the home page (Sphinx builds its navigation from them)."
    blocks = [f"```{{toctree}}\n:hidden:\n:caption: {title}\n\n" + "\n".join(docs) + "\n```" for title, docs in sections]
    return {**md_cell("\n\n".join(blocks)), "id": "toctree"}


def api_index(cfg: dict, summaries: dict[str, str], titles: dict[str, str]) -> str:
    "A page listing every documented name by module, from the package's `_modidx.py` (nbdev's index of names)."
    d = modidx(cfg)
    lines = ["# API reference", "",
             "Every documented name of the package, by module. Each links to its entry on the page of the notebook "
             "that defines and explains it.", ""]
    for mod, syms in sorted(d.get("syms", {}).items()):
        rows = [(q.removeprefix(mod + "."), url) for q, url_file in syms.items() for url in [url_file[0]]
                if url in summaries]
        if not rows: continue
        page = rows[0][1].split("#")[0].removesuffix(".html")
        lines += [f"## {mod}", "", f"On the page [{titles.get(page, page)}]({page}.html).", "",
                  "| name | what it is |", "|---|---|"]
        lines += [f"| [`{n}`]({url}) | {summaries[url].replace('|', chr(92) + '|')} |" for n, url in rows]
        lines.append("")
    return "\n".join(lines)


def modidx(cfg: dict) -> dict:
    "The package's `_modidx.py` (nbdev's index of names and their doc URLs), read without importing the package."
    import ast
    f = ROOT / cfg["lib_path"] / "_modidx.py"
    return ast.literal_eval(f.read_text().split("d = ", 1)[1]) if f.exists() else {"syms": {}}


class AnchorFixer:
    """nbdev links every backticked name it knows, also names that have no entry of their own (a method of a class
    whose show_doc shows only the class). Such links go to the closest documented entry (`BanditTask`), else the page."""

    def __init__(self, cfg: dict, documented: dict[str, str]):
        self.documented = set(documented)
        self.indexed = {u[0] for syms in modidx(cfg).get("syms", {}).values() for u in syms.values()}

    def _fix(self, m: re.Match) -> str:
        url = m.group(2)
        if url in self.documented or url not in self.indexed: return m.group(0)
        page, anchor = url.split("#", 1)
        while "." in anchor:
            anchor = anchor.rsplit(".", 1)[0]
            if f"{page}#{anchor}" in self.documented: return m.group(1) + f"{page}#{anchor}"
        return m.group(1) + page

    def text(self, t: str) -> str:
        return re.sub(r"(\]\(<?)([\w.-]+\.html#[^)\s>]+)", self._fix, t)

    def notebook(self, nb: dict):
        for c in nb["cells"]:
            if c["cell_type"] == "markdown": c["source"] = self.text(c["source"])
            for o in c.get("outputs", []):
                if "text/markdown" in o.get("data", {}): o["data"]["text/markdown"] = self.text(o["data"]["text/markdown"])


def write_if_changed(path: Path, text: str):
    if not path.exists() or path.read_text() != text: path.write_text(text)


def sphinx_sources(procd: dict[Path, Path], src: Path, cfg: dict) -> dict[str, str]:
    "Write the Sphinx source folder: one notebook per page, the API index, the navigation. Returns page -> title."
    src.mkdir(parents=True, exist_ok=True)
    pages = {nb.name: page_name(nb) for nb in procd}
    link, summaries, titles, converted = Linker(cfg, pages), {}, {}, {}
    for nb, proc in procd.items():
        new, fm = convert(json.loads(proc.read_text()), pages[nb.name], link, summaries)
        titles[pages[nb.name]] = str(fm.get("title", pages[nb.name]))
        converted[pages[nb.name]] = new
    fix = AnchorFixer(cfg, summaries)
    for new in converted.values(): fix.notebook(new)
    sections = [(t, [pages[nb.name] for nb in nbl]) for t, nbl in nav(list(procd))] + [("Reference", ["api"])]
    if "index" in converted: converted["index"]["cells"].append(toctree_cell(sections))
    keep = {"api.md"} | {f"{p}.ipynb" for p in converted}
    for p, new in converted.items(): write_if_changed(src / f"{p}.ipynb", json.dumps(new, indent=1))
    write_if_changed(src / "api.md", api_index(cfg, summaries, titles))
    for old in list(src.glob("*.ipynb")) + list(src.glob("*.md")):
        if old.name not in keep: old.unlink()  # a notebook that was removed or renamed
    return titles


# ---------------------------------------------------------------------------------------------------------------
# Stage 2b: assets and Sphinx

def vendor_assets(work: Path) -> Path:
    "plotly.js from the plotly package and MathJax 3 from npm (docs/package.json), into a static folder of the site."
    import plotly
    vendor = work / "vendor"; vendor.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", vendor / "plotly.min.js")
    mj = DOCS / "node_modules" / "mathjax" / "es5"
    if not (mj / "tex-chtml.js").exists():
        if not shutil.which("npm"):
            sys.exit("build_docs: MathJax is missing and npm is not installed: install Node.js, then run "
                     "`npm ci --prefix docs`")
        log("installing MathJax from npm (npm ci --prefix docs)")
        subprocess.run(["npm", "ci", "--prefix", str(DOCS), "--no-audit", "--no-fund"], check=True)
    dst = vendor / "mathjax"
    if not (dst / "tex-chtml.js").exists():
        # the combined TeX->CHTML component, the extensions it autoloads, its fonts, and the menu's parts
        for rel in ["tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui", "a11y", "sre"]:
            s, d = mj / rel, dst / rel
            if s.is_dir(): shutil.copytree(s, d, dirs_exist_ok=True)
            else: d.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(s, d)
    return vendor


def run_sphinx(src: Path, out: Path, work: Path, vendor: Path, cfg: dict, jobs: int, quiet: bool) -> list[str]:
    "Build the HTML with Sphinx, in this process; return Sphinx's warnings."
    import io
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils
    warn = io.StringIO()
    overrides = {"html_static_path": [str(DOCS / "_static"), str(vendor)], "project": cfg["name"],
                 "html_title": cfg["name"]}
    with patch_docutils(DOCS), docutils_namespace():
        app = Sphinx(str(src), str(DOCS), str(out), str(work / "doctrees"), "html", confoverrides=overrides,
                     status=None if quiet else sys.stdout, warning=warn, parallel=jobs, keep_going=True)
        app.build()
    return [w for w in warn.getvalue().splitlines() if w.strip()]


def build(out: Path, work: Path, cache: Path, nbs: Path, jobs: int, quiet: bool = True) -> dict:
    t0 = time.time()
    cfg = project_config()
    nbl = notebooks(nbs)
    if not nbl: sys.exit(f"build_docs: no notebooks in {nbs}")
    procd, failures = preprocess(nbl, cache, cfg, jobs)
    t1 = time.time(); log(f"pre-processing done in {t1 - t0:.1f}s")
    for name, fails in failures.items():
        for f in fails: log(f"WARNING {name}: nbdev could not execute {f} (its stored outputs are kept)")
    sphinx_sources(procd, work / "src", cfg)
    vendor = vendor_assets(work)
    # Sphinx builds in the work folder (myst-nb writes a `jupyter_execute` folder beside its output), then the site
    # is copied to `out`
    html = work / "html"
    warns = run_sphinx(work / "src", html, work, vendor, cfg, jobs, quiet)
    for w in warns: log("sphinx:", w)
    (html / ".nojekyll").write_text("")
    if (html / "_sources").is_dir() and not any((html / "_sources").iterdir()): (html / "_sources").rmdir()
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(html, out, ignore=shutil.ignore_patterns(".buildinfo", ".doctrees"))
    t2 = time.time(); log(f"sphinx done in {t2 - t1:.1f}s; site in {out} ({t2 - t0:.1f}s in all)")
    return {"failures": failures, "warnings": warns, "seconds": t2 - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "_site"), help="where the site goes (default: _site)")
    ap.add_argument("--work", default=str(ROOT / "build" / "docs"), help="cache and Sphinx sources (default: build/docs)")
    ap.add_argument("--cache", default=str(ROOT / "build" / "docs-cache"),
                    help="nbdev-processed notebooks, by content (default: build/docs-cache; safe to share)")
    ap.add_argument("--nbs", default=None, help="notebook folder (default: nbs_path of pyproject.toml)")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="worker processes (default: 2)")
    ap.add_argument("--clean", action="store_true", help="start from nothing: remove --out, --work and --cache first")
    ap.add_argument("--no-quarto-config", action="store_true", help="leave nbs/_quarto.yml, nbdev.yml, sidebar.yml")
    ap.add_argument("--quarto-config", action="store_true", help="only refresh the Quarto files in nbs/")
    ap.add_argument("--check-quarto", action="store_true", help="only check the Quarto files in nbs/ are current")
    ap.add_argument("--strict", action="store_true", help="fail on a cell nbdev cannot execute or a Sphinx warning")
    ap.add_argument("--verbose", action="store_true", help="show Sphinx's progress")
    a = ap.parse_args(argv)
    os.chdir(ROOT)  # nbdev finds its settings from the working directory
    nbs = Path(a.nbs).resolve() if a.nbs else ROOT / project_config()["nbs_path"]
    if a.check_quarto: sys.exit(0 if write_quarto_files(nbs, check=True) else 1)
    if a.quarto_config: write_quarto_files(nbs); return
    out, work, cache = Path(a.out).resolve(), Path(a.work).resolve(), Path(a.cache).resolve()
    if a.clean:
        for p in (out, work, cache): shutil.rmtree(p, ignore_errors=True)
    if not a.no_quarto_config and nbs == ROOT / project_config()["nbs_path"]: write_quarto_files(nbs)
    res = build(out, work, cache, nbs, a.jobs, quiet=not a.verbose)
    if a.strict and (res["failures"] or res["warnings"]):
        sys.exit("build_docs: --strict: see the warnings above")


if __name__ == "__main__":
    main()
