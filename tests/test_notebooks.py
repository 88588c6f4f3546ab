"""Every notebook in notebooks/ runs cell by cell in a fresh kernel, as a reader would run it.

Each notebook is executed with nbclient in the ``python3`` kernel (``.ci/setup`` registers the
venv's python as that kernel), with ``QUICK=1`` in its environment and notebooks/ as its working
directory, like Jupyter opened on it. A cell that raises fails the test, and every gallery
notebook ends in ``assert`` cells that state what it shows. The checkout under test is put first
on the kernel's ``PYTHONPATH``, so the kernel imports this dpplayers whatever the venv points at.
Notebooks added later are picked up by the glob; each is generated from an ``examples/``
script (its one source) and must match it cell for cell. The runner is a required test
dependency (the ``notebooks`` extra), never skipped.
"""

import os
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel nbclient starts; imported so its absence fails)
import jupytext
import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def kernel_env() -> dict[str, str]:
    """This process's environment with QUICK=1, one thread per library and the checkout first
    on the path."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "QUICK": "1", "PYTHONPATH": path,
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    return env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)  # cell ids and the rest of nbformat >= 4.5
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=kernel_env())  # raises CellExecutionError naming the failing cell
    assert all(c.get("outputs") is not None for c in notebook.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_matches_its_script(path: Path) -> None:
    script = ROOT / "examples" / f"{path.stem}.py"
    assert script.exists(), f"{path.name} has no examples/{path.stem}.py to be generated from"
    ours = [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]
    theirs = [(c.cell_type, c.source) for c in jupytext.read(script).cells]
    assert ours == theirs, f"regenerate {path.name} from {script.name}: bash notebooks/build.sh"
