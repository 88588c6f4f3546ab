"""The compiled-program disk cache (``compile(..., cache=...)``): keys, round trip in a fresh
process, stale and damaged entries rebuilt, atomic writes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers import _cache, _program

ROOT = Path(__file__).resolve().parent.parent


def lasso(scale: float = 1.0, name: str | None = "A") -> tuple[cp.Problem, list, list]:
    A, b = cp.Parameter((5, 3), name=name), cp.Parameter(5)
    x = cp.Variable(3)
    con = cp.abs(x) <= scale
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + cp.norm1(x)), [con])
    return problem, [A, b], [x, con.dual_variables[0]]


def key(problem: cp.Problem, params: list, variables: list, **options: object) -> str:
    return _cache.fingerprint(problem, params, variables, {"solver": "SCS", **options})


def test_key_ignores_values_and_ids_but_not_structure() -> None:
    problem, params, variables = lasso()
    base = key(problem, params, variables)
    again, params2, variables2 = lasso()  # new leaves, new ids
    params2[0].value = np.ones((5, 3))  # a value never matters
    assert key(again, params2, variables2) == base
    assert key(*lasso(scale=2.0)) != base  # a constant
    assert key(*lasso(name="B")) != base  # a user's name shows in messages
    assert key(problem, params[::-1], variables) != base  # the order values come in
    assert key(problem, params, variables[:1]) != base  # the request
    assert key(problem, params, variables, solver="CLARABEL") != base  # an option
    A, b = params
    x = cp.Variable(3)
    swapped = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + cp.norm1(x)),
                         [cp.abs(x) >= -1])
    assert key(swapped, params, None) != key(problem, params, None)
    y = cp.Variable(3)
    two = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + cp.norm1(y)), [cp.abs(x) <= 1])
    assert key(two, params, None) != key(problem, params, None)  # two leaves, not one


def test_atom_and_objective_data_enter_the_key() -> None:
    x, p = cp.Variable((2, 3)), cp.Parameter((2, 3))
    def k(expr: cp.Expression, sense: type = cp.Minimize) -> str:
        return key(cp.Problem(sense(expr), [cp.sum(cp.abs(x)) <= 1]), [p], None)
    pairs = [(cp.norm(cp.vec(x - p, order="F"), 1), cp.norm(cp.vec(x - p, order="F"), 2)),
             (cp.sum(cp.sum(x - p, axis=0)), cp.sum(cp.sum(x - p, axis=1))),
             (cp.sum(x[0, 0:2] - p[0, 0:2]), cp.sum(x[0, 1:3] - p[0, 1:3])),
             (cp.sum(cp.power(cp.vec(x - p, order="F"), 2)), cp.sum(cp.power(cp.vec(x - p, order="F"), 4)))]
    for a, b in pairs:
        assert k(a) != k(b)
    assert k(cp.sum(x - p)) != k(cp.sum(x - p), cp.Maximize)


def test_an_uncacheable_problem_compiles_with_a_warning(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> str:
        raise _cache.Uncacheable("cannot describe Thing exactly")

    monkeypatch.setattr(_program, "fingerprint", refuse)
    with pytest.warns(RuntimeWarning, match="cannot be cached .*Thing"):
        prog = dpplayers.compile(*lasso(), cache=tmp_path)
    assert list(tmp_path.iterdir()) == []
    np.testing.assert_allclose(_solve(prog), _solve(dpplayers.compile(*lasso())), atol=1e-12)


def _solve(prog: dpplayers.CompiledProblem) -> np.ndarray:
    rng = np.random.default_rng(3)
    sol = prog.solve(rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5)),
                     solver_args={"eps": 1e-10})
    return np.concatenate([sol.values[0].ravel(), sol.values[1].ravel(),
                           np.concatenate([g.ravel() for g in sol.vjp(np.ones((2, 3)), None)])])


def test_cache_round_trip_in_a_fresh_process(tmp_path: Path) -> None:
    """A second process loads the program (its compiler is disabled) bound to its own
    problem, and solves and differentiates as a fresh compile does."""
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
        import dpplayers, dpplayers._program as program
        from test_cache import lasso, _solve
        if sys.argv[1] == "load":
            def refuse(*args, **kwargs):
                raise AssertionError("compiled again instead of loading")
            program.canonicalize = refuse
        problem, params, variables = lasso()
        prog = dpplayers.compile(problem, params, variables, cache={str(tmp_path)!r})
        assert prog.problem is problem
        np.save({str(tmp_path / "out")!r} + sys.argv[1] + ".npy", _solve(prog))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for step in ("store", "load"):
        subprocess.run([sys.executable, "-c", script, step], check=True, env=env)
    assert len(list(tmp_path.glob("*.pkl"))) == 1
    expected = _solve(dpplayers.compile(*lasso()))
    for step in ("store", "load"):
        np.testing.assert_allclose(np.load(tmp_path / f"out{step}.npy"), expected,
                                   rtol=0, atol=1e-12)


def _entry(tmp_path: Path) -> Path:
    dpplayers.compile(*lasso(), cache=tmp_path)
    (path,) = tmp_path.glob("*.pkl")
    return path


def _compiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = _program.canonicalize

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_program, "canonicalize", counting)
    return calls


def test_loaded_program_is_bound_to_this_problem(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _entry(tmp_path)
    calls = _compiles(monkeypatch)
    problem, params, variables = lasso()
    prog = dpplayers.compile(problem, params, variables, cache=tmp_path)
    assert calls == [] and prog.problem is problem
    sol = prog.solve(np.eye(5, 3), np.arange(5.0))
    block = sol.sensitivity(of=variables[0], wrt=params[0])  # found by object: this problem's
    np.testing.assert_allclose(block.block("#0", "A"), sol.jacobian()[0][0], atol=1e-12)
    for p, v in zip(params, (np.eye(5, 3), np.arange(5.0))):
        p.value = v
    problem.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(sol.values[0], variables[0].value, atol=1e-6)


@pytest.mark.parametrize("stale", [{"cvxpy": "0.0.1"}, {"source": "0" * 64}],
                         ids=["cvxpy", "dpplayers-source"])
def test_stale_version_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  stale: dict[str, str]) -> None:
    """Another cvxpy, or dpplayers' own source changed without a version bump (a program
    pickled by other code): rebuilt, never used."""
    path = _entry(tmp_path)
    with open(path, "rb") as f:
        header = pickle.load(f)
        payload = f.read()
    header["versions"] = {**header["versions"], **stale}
    with open(path, "wb") as f:
        pickle.dump(header, f)
        f.write(payload)
    calls = _compiles(monkeypatch)
    expected = _solve(dpplayers.compile(*lasso()))
    assert calls == [1]
    prog = dpplayers.compile(*lasso(), cache=tmp_path)
    assert calls == [1, 1]  # the stale entry was not used ...
    np.testing.assert_allclose(_solve(prog), expected, atol=1e-12)
    with open(path, "rb") as f:  # ... and was overwritten with this version's
        assert pickle.load(f)["versions"] == _cache.versions()
    dpplayers.compile(*lasso(), cache=tmp_path)
    assert calls == [1, 1]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_entry_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  damage: str) -> None:
    path = _entry(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-20] ^= 0xFF
    else:
        data = bytearray(b"not a pickle at all")
    path.write_bytes(bytes(data))
    calls = _compiles(monkeypatch)
    prog = dpplayers.compile(*lasso(), cache=tmp_path)
    assert calls == [1]
    np.testing.assert_allclose(_solve(prog), _solve(dpplayers.compile(*lasso())), atol=1e-12)
    assert _cache.load(path, path.stem, _cache.versions()) is not None  # rewritten whole


def test_default_directory_and_no_temporary_files(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPPLAYERS_CACHE", str(tmp_path / "env"))
    dpplayers.compile(*lasso(), cache=True)
    assert [p.suffix for p in (tmp_path / "env").iterdir()] == [".pkl"]


def test_layer_accepts_cache(tmp_path: Path) -> None:
    torch_layers = pytest.importorskip("dpplayers.torch")
    problem, params, variables = lasso()
    layer = torch_layers.CvxpyLayer(problem, params, variables[:1], cache=tmp_path)
    problem2, params2, variables2 = lasso()
    again = torch_layers.CvxpyLayer(problem2, params2, variables2[:1], cache=tmp_path)
    assert len(list(tmp_path.glob("*.pkl"))) == 1
    assert layer.program.compile_seconds == again.program.compile_seconds  # loaded
