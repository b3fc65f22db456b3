"""Execute a notebook in place and keep its outputs: how a page's `#| slow` cells get their stored evidence.

Every code cell runs, `#| slow` ones included, except cells marked `#| eval: false` and, unless `--cuda` is given,
cells marked `#| cuda` (those keep whatever output they had). The kernel starts in the notebook's folder, as under
`nbdev-test`. Outputs are written back only when every cell ran; on an error the notebook on disk is left as it was
and the failing cell is named. Uses `nbclient` (Jupyter's own executor, installed with jupyterlab) rather than a
hand-written kernel loop. Heavy pages take minutes to hours on 2 cores: run one at a time, e.g.

    OMP_NUM_THREADS=2 .venv/bin/python tools/run_nb.py nbs/21_tdpo.ipynb
"""
import argparse, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def flags(src: str) -> set[str]:
    "The nbdev directives of a cell's first lines, e.g. {'slow'} or {'eval: false'}."
    out = set()
    for line in src.splitlines()[:4]:
        if line.replace(" ", "").startswith("#|"): out.add(line.split("|", 1)[1].strip().replace(" ", "").replace(":", ": "))
    return out


def skipped(src: str, cuda: bool) -> bool:
    f = flags(src)
    return "eval: false" in f or ("cuda" in f and not cuda)


def run(path: Path, cuda: bool = False, timeout: int = 6 * 3600) -> None:
    nb = nbformat.read(path, as_version=4)
    keep = {}  # cells left out: executed as empty cells, their stored source and outputs put back afterwards
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code" and skipped(c.source, cuda):
            keep[i] = (c.source, c.get("outputs", []), c.get("execution_count"))
            c.source = ""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    t0 = time.time()
    try:
        client.execute()
    except CellExecutionError as e:
        sys.exit(f"{path}: a cell failed; the notebook on disk is unchanged.\n{e}")
    for i, (src, outputs, count) in keep.items():
        nb.cells[i].source, nb.cells[i].outputs, nb.cells[i].execution_count = src, outputs, count
    nbformat.write(nb, path)
    print(f"{path}: {sum(c.cell_type == 'code' for c in nb.cells) - len(keep)} cells executed, {len(keep)} left out, "
          f"{(time.time() - t0) / 60:.1f} min; run nbdev-clean before committing")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--cuda", action="store_true", help="also run `#| cuda` cells (on a machine with a GPU)")
    p.add_argument("--timeout", type=int, default=6 * 3600, help="seconds a single cell may take")
    a = p.parse_args()
    for nb in a.notebooks: run(nb.resolve(), a.cuda, a.timeout)
