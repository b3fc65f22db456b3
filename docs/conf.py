# Sphinx configuration of the offline docs site. Not run by hand: `python tools/build_docs.py` writes the sources
# (nbdev-processed notebooks) into build/docs/src and builds them with this file, adding the static folder that holds
# plotly.js and MathJax. Nothing here loads anything from outside the site.
import re, tomllib
from pathlib import Path

_py = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
_urls = _py["project"].get("urls", {})

project = _py["project"]["name"]
html_title = project
author = "the rlhf_ref developers"
copyright = author
extensions = ["myst_nb", "sphinx.ext.mathjax"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# myst-nb: render the stored outputs, never execute; markdown with LaTeX ($...$, $$...$$, amsmath environments)
nb_execution_mode = "off"
nb_merge_streams = True
nb_output_stderr = "show"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_inline", "attrs_block"]
myst_dmath_double_inline = True  # $$...$$ inside a paragraph, as the notebooks (and Jupyter) allow
myst_all_links_external = True   # tools/build_docs.py has already made every link point at its page or anchor
myst_heading_anchors = 0
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "toc.not_included"]

# MathJax 3 served from the site (copied from npm's `mathjax` package by the build)
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]},
                   "options": {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"}}

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]  # the build adds its folder of vendored assets
html_css_files = ["rlhf-ref.css"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_favicon = "_static/favicon.svg"
html_context = {"default_mode": "auto"}  # light or dark as the reader's system says (and no console error about it)
html_theme_options = {
    "repository_url": _urls.get("Repository", ""),
    "use_repository_button": bool(_urls.get("Repository")),
    "use_download_button": False,
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "show_navbar_depth": 1,
    "navigation_with_keys": False,
    "search_bar_text": "Search the docs...",
    "pygments_light_style": "tango",
}

_api_anchor = re.compile(r'<div id="([^"]+)" class="api-anchor">')


def _keep_api_ids(app, doctree):
    """API entries carry nbdev's ids (`#dpo_loss`, `#train`), which doc links point to. A section whose own id is the
    same (the page title `train` against the method `train`) would catch those links, so it gets another id."""
    from docutils import nodes
    anchors = {i for raw in doctree.findall(nodes.raw) for i in _api_anchor.findall(raw.astext())}
    for sec in doctree.findall(nodes.section):
        if set(sec["ids"]) & anchors:
            for i in sec["ids"]: doctree.ids.pop(i, None)
            sec["ids"] = [f"section-{i}" if i in anchors else i for i in sec["ids"]]
            for i in sec["ids"]: doctree.ids[i] = sec


def _plotly_on_pages_with_figures(app, pagename, templatename, context, doctree):
    "plotly.js (4 MB) only on the pages that hold a figure."
    if 'class="plotly-figure"' in context.get("body", ""):
        app.add_js_file("plotly.min.js")
        app.add_js_file("plotly-figures.js")


def setup(app):
    app.connect("doctree-read", _keep_api_ids, priority=400)  # before the table-of-contents collector reads ids
    app.connect("html-page-context", _plotly_on_pages_with_figures)
