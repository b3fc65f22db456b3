"""Write README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which cannot be installed everywhere).

Markdown cells are copied; code cells become ```python blocks followed by their text output; cells whose first
lines carry the nbdev directives `#| hide` or `#| export` are left out, and directive lines are dropped.
`--check` exits 1 (and says so) when README.md is not what this script would write.

First, the algorithm table between the `<!-- algos:start ... -->` and `<!-- algos:end -->` markers of nbs/index.ipynb
is rewritten from the registry (`rlhf_ref.algos.algo_table`), and rows of the "Planned" table whose `--algo` names
are all registered are dropped: adding an algorithm notebook updates both without hand edits.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def cell_text(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]

def render(nb: dict) -> str:
    parts = ["<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->"]
    for cell in nb["cells"]:
        src = cell_text(cell)
        directives = re.findall(r"^#\|\s*(\w+)", src, flags=re.M)
        if cell["cell_type"] == "markdown":  # links between notebooks point into nbs/ from the repository root
            parts.append(re.sub(r"\]\((?![a-z]+:|#|/)([\w.-]+\.ipynb)", r"](nbs/\1", src).strip()); continue
        if {"hide", "export", "exports", "default_exp"} & set(directives): continue
        code = "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip()
        if code: parts.append(f"```python\n{code}\n```")
        outs = []
        for o in cell.get("outputs", []):
            text = o.get("text") or o.get("data", {}).get("text/plain")
            if text: outs.append("".join(text) if isinstance(text, list) else text)
        if outs: parts.append("```\n" + "".join(outs).rstrip() + "\n```")
    return "\n\n".join(parts) + "\n"

def _planned_names(line: str) -> set:
    "The `--algo` names in the first column of a planned-table row (empty for other lines)."
    cells = line.split("|")
    return set(re.findall(r"`([a-z][a-z0-9-]*)`", cells[1])) if line.startswith("| `") and len(cells) > 2 else set()

def sync_algos(nb: dict) -> bool:
    "Rewrite the generated algorithm table in `nb` and drop planned rows now registered; True if anything changed."
    sys.path.insert(0, str(ROOT))
    from rlhf_ref.algos import algo_table, algorithms
    registered, changed = set(algorithms()), False
    table = algo_table().replace("](nbs/", "](")  # links between notebooks; render() adds nbs/ for the README
    for cell in nb["cells"]:
        src = cell_text(cell)
        m = re.search(r"(<!-- algos:start[^>]*-->\n)(.*?)(<!-- algos:end -->)", src, flags=re.S)
        if cell["cell_type"] != "markdown" or not m: continue
        head, tail = src[:m.start(2)], src[m.end(2):]
        tail = "\n".join(l for l in tail.split("\n") if not (_planned_names(l) and _planned_names(l) <= registered))
        new = head + table + "\n" + tail
        if new != src: cell["source"], changed = new.splitlines(keepends=True), True
    return changed

def main():
    path = ROOT / "nbs" / "index.ipynb"
    nb = json.loads(path.read_text())
    if sync_algos(nb):
        if "--check" in sys.argv: print("nbs/index.ipynb's algorithm table is out of date: run `python tools/make_readme.py`"); sys.exit(1)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n"); print(f"updated the algorithm table in {path}")
    text = render(nb)
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            print("README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py`"); sys.exit(1)
        print("README.md is up to date"); return
    readme.write_text(text); print(f"wrote {readme}")

if __name__ == "__main__":
    main()
