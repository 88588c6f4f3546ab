"""The README's demo runs as shipped (so it cannot rot); the gallery's notebooks, each generated
from its examples/ script, are executed by tests/test_notebooks.py."""

import pathlib
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_demo_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "demo.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "The problem is DPP." in out and "relative gap" in out
    gap = float(out.split("relative gap")[1].split()[0])
    assert gap < 1e-5


@pytest.mark.slow
def test_distributed_sweep_runs(monkeypatch, capsys):
    """The scenario sweep on a LocalCluster (~12 s: the cluster's start) checks itself."""
    pytest.importorskip("distributed")
    monkeypatch.setenv("QUICK", "1")
    runpy.run_path(str(ROOT / "examples" / "distributed_sweep.py"), run_name="__main__")
    assert "checked against the local solve and CVXPY" in capsys.readouterr().out
