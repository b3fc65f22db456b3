"""Write README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which cannot be installed everywhere).

Markdown cells are copied; code cells become ```python blocks followed by their text output; cells whose first
lines carry the nbdev directives `#| hide` or `#| export` are left out, and directive lines are dropped.
`--check` exits 1 (and says so) when README.md is not what this script would write.
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

def main():
    text = render(json.loads((ROOT / "nbs" / "index.ipynb").read_text()))
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            print("README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py`"); sys.exit(1)
        print("README.md is up to date"); return
    readme.write_text(text); print(f"wrote {readme}")

if __name__ == "__main__":
    main()
