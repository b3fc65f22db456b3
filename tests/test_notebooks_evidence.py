"""Stored evidence for every claim: a `#| slow` cell keeps its output, and a number the prose quotes as a result is
one the page has printed (or plotted) above it.

The number check is a heuristic, written to have no false positives on the current notebooks:

- What counts as a quoted number: a decimal (`0.57`, `3.235`) or a percentage (`71%`, `12.3%`) in a markdown cell.
  Plain integers are not checked (step counts, years, equation and section numbers); arXiv ids, version strings
  (`0.7.3`) and numbers inside a word or after `^`, `_` or `§` are skipped.
- Where it may come from: the text outputs (`stream`, `text/plain`, `text/markdown`) and the plotted data (plotly
  figures' trace values) of the code cells *above* the markdown cell, or the source of any code cell of the notebook
  (a hyperparameter or an asserted constant is visible to the reader there). A quoted `0.46` is supported by a printed
  value with at least two decimals that rounds to it (0.4624 does, 0.5 does not); `71%` by 0.71, 0.7102 or 71.0.
- Opt-out for numbers that are not results of the page (a paper's value, a hand-worked example, a model card's size,
  a difference of two printed numbers): an HTML comment in the same markdown cell that lists them, which the docs do
  not render, e.g. `<!-- not printed: 0.39 11.8 15.59 (the FKGL formula's constants) -->`. Every number inside such a
  comment is exempt in that cell, and only there.

`index.ipynb` is not checked: its numbers summarise the other pages (its rows should quote what they print).
"""
import ast, json, os, re
from pathlib import Path
import pytest

NB_DIR = Path(os.environ.get("RLHF_REF_NBS") or Path(__file__).resolve().parent.parent / "nbs")  # another folder: a copy
NBS = sorted(p for p in NB_DIR.glob("*.ipynb") if p.name != "index.ipynb")

QUOTED = re.compile(r"(?<![\w.§^_/\\])(\d*\.\d+|\d+)(\s?%)?(?![\w.]*\d)(?!\.\d)")  # 0.57, 12.3%, 71 % (not 0.7.3)
PRINTED = re.compile(r"\d*\.\d+|\d+")
OPT_OUT = re.compile(r"<!--\s*not printed:(.*?)-->", re.S)
ARXIV = re.compile(r"\b\d{4}\.\d{4,5}\b")


def flagged(src: str, flag: str) -> bool:
    "Whether a code cell carries the nbdev directive `#| flag` in its first lines."
    return any(l.strip().replace(" ", "") == "#|" + flag for l in src.splitlines()[:3])


def import_only(src: str) -> bool:
    "A cell of imports (and directives) only: it has nothing to show."
    body = ast.parse("\n".join(l for l in src.splitlines() if not l.startswith(("%", "!")))).body
    return all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body)


def _plotted(node):
    "Every number in a plotly figure's trace data (x, y, error bars, text...), recursively."
    if isinstance(node, bool): return
    if isinstance(node, (int, float)): yield repr(float(node)) if isinstance(node, float) else str(node)
    elif isinstance(node, str) and PRINTED.fullmatch(node): yield node
    elif isinstance(node, dict):
        for v in node.values(): yield from _plotted(v)
    elif isinstance(node, list):
        for v in node: yield from _plotted(v)


def output_text(cell: dict) -> str:
    "A code cell's stored outputs as text: printed text, displayed values and plotted numbers (not HTML, not images)."
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream": out.append("".join(o["text"]))
        for k in ("text/plain", "text/markdown"):
            if k in o.get("data", {}): out.append("".join(o["data"][k]))
        fig = o.get("data", {}).get("application/vnd.plotly.v1+json")
        if fig: out.append(" ".join(_plotted(fig.get("data", []))))
    return "\n".join(out)


def values(text: str) -> list[tuple[float, int]]:
    "Every number written in `text`, with its number of decimals (signs dropped: prose may write a minus as −)."
    return [(float(s), len(s.partition(".")[2])) for s in PRINTED.findall(text)]


def quoted(md: str) -> list[str]:
    "The result-like numbers of a markdown cell: decimals and percentages, outside opt-out comments and arXiv ids."
    md = ARXIV.sub(" ", re.sub(r"https?://\S+", " ", OPT_OUT.sub(" ", md)))
    return [s + "%" if pct else s for s, pct in QUOTED.findall(md) if "." in s or pct]


def supported(q: str, vals: list[tuple[float, int]]) -> bool:
    "Whether `q` is one of `vals` rounded to `q`'s decimals (for a percentage, also a fraction times 100)."
    pct = q.endswith("%"); s = q.rstrip("%").strip()
    x, d = float(s), len(s.partition(".")[2])
    tol = 0.5 * 10 ** -d + 1e-9
    return any((dv >= d and abs(v - x) <= tol) or (pct and abs(100 * v - x) <= tol) for v, dv in vals)


def unsupported_numbers(cells: list[dict]) -> list[tuple[int, str]]:
    "(markdown cell index, number) for every quoted number that nothing printed above it or written in code supports."
    code = [v for c in cells if c["cell_type"] == "code" for v in values("".join(c["source"]))]
    above, bad = [], []
    for i, c in enumerate(cells):
        src = "".join(c["source"])
        if c["cell_type"] == "code": above += values(output_text(c))
        elif c["cell_type"] == "markdown":
            exempt = [v for m in OPT_OUT.findall(src) for v in values(m)]
            bad += [(i, q) for q in quoted(src) if not supported(q, above + code + exempt)]
    return bad


def slow_cells_without_output(cells: list[dict]) -> list[int]:
    "Indices of `#| slow` code cells that do something (not imports only) and store no output."
    return [i for i, c in enumerate(cells) if c["cell_type"] == "code" and flagged("".join(c["source"]), "slow")
            and not import_only("".join(c["source"])) and not c.get("outputs")]


def load(nb: Path) -> list[dict]: return json.loads(nb.read_text())["cells"]


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.name)
def test_slow_cells_store_their_output(nb):
    "CI skips `#| slow` cells, so their stored output is the only evidence the page has of what they do."
    missing = slow_cells_without_output(load(nb))
    assert not missing, f"{nb.name}: `#| slow` cells {missing} (0-based) store no output; run them (run_nb.py) and keep it"


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.name)
def test_quoted_numbers_are_printed_above(nb):
    "A number the prose states must be on the page before it, or be marked as not a result of the page."
    bad = unsupported_numbers(load(nb))
    assert not bad, (f"{nb.name}: numbers quoted in markdown but not printed above (cell, number): {bad}; print them "
                     "before the text, fix the text, or list them in `<!-- not printed: ... (why) -->` if not results")


# The checks themselves, on small made-up notebooks: each must be able to fail.
def _md(s): return dict(cell_type="markdown", source=s)
def _code(s, *texts): return dict(cell_type="code", source=s, outputs=[dict(output_type="stream", text=t) for t in texts])


def test_checker_catches_missing_and_mismatched_numbers():
    cells = [_code("acc = run(lr=0.01)\nprint(acc)", "accuracy 0.5734 ± 0.0211\n"), _md("Accuracy 0.573 ± 0.021 (lr 0.01).")]
    assert unsupported_numbers(cells) == []
    assert unsupported_numbers(cells + [_md("It reaches 0.59.")]) == [(2, "0.59")]
    assert unsupported_numbers([_md("It reaches 0.57."), *cells]) == [(0, "0.57")]        # printed only below
    assert unsupported_numbers([_code("print(a)", "0.5\n"), _md("0.53")]) == [(1, "0.53")]  # too few decimals printed
    assert unsupported_numbers([_code("print(a)", "finished 0.7102\n"), _md("71% finished")]) == []
    assert unsupported_numbers([_md("paper: 65% win rate <!-- not printed: 65% (the paper's) -->")]) == []
    assert unsupported_numbers([_md("arXiv 2305.18290, textstat 0.7.3, step 40, §14")]) == []


def test_checker_catches_a_slow_cell_without_output():
    cells = [_code("#| slow\nimport torch"), _code("#| slow\nx = train()\nprint(x)", "0.5\n"), _code("#| slow\ny = train()")]
    assert slow_cells_without_output(cells) == [2]


def test_fails_on_stripped_copies_of_the_real_notebooks():
    "Deliberately broken copies of the real pages: their slow cells' outputs removed, as if run without them."
    newly_unsupported = 0
    for nb in NBS:
        cells = load(nb)
        slow = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and flagged("".join(c["source"]), "slow")]
        if not slow: continue
        stripped = [dict(c, outputs=[]) if j in slow else c for j, c in enumerate(cells)]
        assert slow_cells_without_output(stripped) == [i for i in slow if not import_only("".join(cells[i]["source"]))]
        newly_unsupported += len(set(unsupported_numbers(stripped)) - set(unsupported_numbers(cells)))
    assert newly_unsupported >= 10  # the prose of the slow runs quotes their numbers, and the check notices them gone
