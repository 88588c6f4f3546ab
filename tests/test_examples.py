"""The examples and notebooks run as shipped (so the README's demo cannot rot)."""

import json
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


def test_optnet_example_and_notebook_agree_with_finite_differences(capsys):
    pytest.importorskip("torch")
    notebook = json.loads((ROOT / "notebooks" / "optnet_qp.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    exec(compile(code, "optnet_qp.ipynb", "exec"), {"__name__": "__main__"})  # noqa: S102 (our notebook)
    out = capsys.readouterr().out
    analytic = float(out.split("analytic")[1].split(",")[0])
    fd = float(out.split("finite differences")[1].split()[0])
    assert abs(analytic - fd) <= 1e-5 * max(1.0, abs(fd))
    assert "dL/dQ is symmetric: True" in out


@pytest.mark.slow
def test_distributed_sweep_runs(monkeypatch, capsys):
    """The scenario sweep on a LocalCluster (~12 s: the cluster's start) checks itself."""
    pytest.importorskip("distributed")
    monkeypatch.setenv("QUICK", "1")
    runpy.run_path(str(ROOT / "examples" / "distributed_sweep.py"), run_name="__main__")
    assert "checked against the local solve and CVXPY" in capsys.readouterr().out
