"""The README's demo runs as shipped (so it cannot rot); the gallery's notebooks, each generated
from its examples/ script, are executed by tests/test_notebooks.py."""

import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_demo_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "demo.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "The problem is DPP." in out and "relative gap" in out
    gap = float(out.split("relative gap")[1].split()[0])
    assert gap < 1e-5
