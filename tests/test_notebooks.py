"""House rules for the notebooks themselves, checked on every notebook in nbs/."""
import ast, json, re
from pathlib import Path
import pytest

NBS = sorted((Path(__file__).resolve().parent.parent / "nbs").glob("*.ipynb"))
EXPORTED = re.compile(r"^#\|\s*(export|exports|exporti|exec_doc)\b", re.M)


def code_cells(nb):
    for i, c in enumerate(json.loads(nb.read_text())["cells"]):
        if c["cell_type"] == "code": yield i, "".join(c["source"]), c


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.name)
def test_import_cells_hold_only_imports(nb):
    """nbdev's docs build runs every cell that imports something: such a cell must not also train, sample or print."""
    for i, src, _ in code_cells(nb):
        if EXPORTED.search(src) or "nbdev_export()" in src or re.search(r"^#\|\s*eval:\s*false", src, re.M): continue
        tree = ast.parse("\n".join(l for l in src.splitlines() if not l.startswith(("%", "!"))))
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)):
            assert all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body), \
                f"{nb.name}, cell {i}: imports mixed with other code:\n{src[:300]}"


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.name)
def test_no_stored_errors(nb):
    "A stored output is never a traceback: a notebook's page must not show a failure as if it were a result."
    for i, _, c in code_cells(nb):
        assert not [o for o in c.get("outputs", []) if o.get("output_type") == "error"], f"{nb.name}, cell {i} stores an error"


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.name)
def test_title_and_summary(nb):
    "Every page starts with a title and a one-line summary (nbdev's `# title` then `> summary`)."
    first = json.loads(nb.read_text())["cells"][0]
    src = "".join(first["source"])
    assert first["cell_type"] == "markdown" and re.match(r"# \S", src) and "\n> " in src, f"{nb.name}: no title/summary"
