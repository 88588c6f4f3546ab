"""Issue #19's speed check: influence of every training point of an L2-regularised logistic
regression (N × d = 1,000 × 20), three ways.

- dpplayers: all N exact leave-one-out refits (``influence(exact=True)``: chord iterations
  from the full fit's factorisation, all N together, each certified by its own KKT residual;
  any refit they do not certify is solved in one batched conic solve), and the
  infinitesimal influences ∂β/∂wᵢ of all N points from one factorisation at the full fit;
- CVXPY one refit at a time: the same weighted problem with a Parameter for the weights
  (CVXPY's DPP fast path and its SCS warm start: the fastest way to loop in CVXPY), and the
  naive loop that builds each leave-one-out problem afresh; each on a subset, extrapolated;
- scikit-learn's LogisticRegression refit N times (a specialised smooth solver: the floor).

All convex solvers run SCS at the same tolerance (eps 1e-8; ``--solver CLARABEL`` for
Clarabel). Prints a table and the ratios; ``--json PATH`` writes them.

    python benchmarks/sensitivity.py [--n 1000 --d 20 --subset 40 --solver SCS]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cvxpy as cp
import numpy as np

import dpplayers

LAM = 1.0
EPS = 1e-8
REPEATS = 7  # forward and influence timings: the median of this many


def data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.where(X @ rng.normal(size=d) / np.sqrt(d) + 0.5 * rng.normal(size=n) > 0, 1.0, -1.0)
    return X, y


def weighted_problem(X: np.ndarray, y: np.ndarray) -> tuple[cp.Problem, cp.Parameter, cp.Variable]:
    w = cp.Parameter(X.shape[0], nonneg=True, name="w")
    beta = cp.Variable(X.shape[1], name="beta")
    loss = w @ cp.logistic(-cp.multiply(y, X @ beta))
    return cp.Problem(cp.Minimize(loss + LAM / 2 * cp.sum_squares(beta))), w, beta


def solver_kwargs(solver: str) -> dict:
    if solver == "SCS":
        return {"eps": EPS}
    return {"tol_gap_abs": EPS, "tol_gap_rel": EPS, "tol_feas": EPS}


def time_dpplayers(X: np.ndarray, y: np.ndarray, solver: str, refits: bool = True) -> dict:
    problem, w, beta = weighted_problem(X, y)
    prog = dpplayers.compile(problem, parameters=[w], variables=[beta], solver=solver)
    ones, args = np.ones(X.shape[0]), {"eps": EPS}
    prog.solve(ones, solver_args=args)  # warm caches (first-use builds)
    forwards, influence_times = [], []
    for _ in range(REPEATS):  # medians: one forward, then the influences from its own
        t0 = time.perf_counter()  # factorisation (a fresh Solution each time)
        sol = prog.solve(ones, solver_args=args)
        forwards.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sens = sol.sensitivity(of=beta, wrt=w)
        influence_times.append(time.perf_counter() - t0)
    forward, influences = float(np.median(forwards)), float(np.median(influence_times))
    if not refits:
        return {"forward_s": forward, "influences_s": influences}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dpplayers.InaccurateSolutionWarning)
        inf = dpplayers.influence(prog, weights=w, coefficients=[beta], values=[ones],
                                  exact=True, flag=False, solver_args=args)
    loo = time.perf_counter() - t0
    return {"forward_s": forward, "influences_s": influences, "influence_method": sens.method,
            "forward_all_s": forwards, "influences_all_s": influence_times,
            "loo_batch_s": loo, "loo": inf.coefficients + inf.exact_change,
            "predicted": inf.predicted_change, "exact": inf.exact_change,
            "iterations": [i["iterations"] for i in inf.loo_solution.info],
            "methods": [i.get("method", "solve") for i in inf.loo_solution.info]}


def time_cvxpy_parametric(X: np.ndarray, y: np.ndarray, subset: int, solver: str) -> dict:
    problem, w, beta = weighted_problem(X, y)
    w.value = np.ones(X.shape[0])
    problem.solve(solver=solver, **solver_kwargs(solver))  # compile + the full fit
    fits, t0 = [], time.perf_counter()
    for i in range(subset):
        value = np.ones(X.shape[0])
        value[i] = 0.0
        w.value = value
        problem.solve(solver=solver, **solver_kwargs(solver))
        fits.append(beta.value.copy())
    return {"per_refit_s": (time.perf_counter() - t0) / subset, "fits": np.array(fits)}


def time_cvxpy_naive(X: np.ndarray, y: np.ndarray, subset: int, solver: str) -> dict:
    t0 = time.perf_counter()
    for i in range(subset):
        keep = np.arange(X.shape[0]) != i
        beta = cp.Variable(X.shape[1])
        loss = cp.sum(cp.logistic(-cp.multiply(y[keep], X[keep] @ beta)))
        cp.Problem(cp.Minimize(loss + LAM / 2 * cp.sum_squares(beta))).solve(
            solver=solver, **solver_kwargs(solver))
    return {"per_refit_s": (time.perf_counter() - t0) / subset}


def time_sklearn(X: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    fits, t0 = [], time.perf_counter()
    for i in range(X.shape[0]):
        keep = np.arange(X.shape[0]) != i
        model = LogisticRegression(C=1 / LAM, fit_intercept=False, tol=1e-10, max_iter=10_000)
        fits.append(model.fit(X[keep], y[keep]).coef_[0])
    return {"all_s": time.perf_counter() - t0, "fits": np.array(fits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--subset", type=int, default=40, help="CVXPY refits timed")
    parser.add_argument("--solver", default="SCS", choices=["SCS", "CLARABEL"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--influences-only", action="store_true",
                        help="time the forward solve and the influences only (no refits)")
    a = parser.parse_args()
    X, y = data(a.n, a.d)
    if a.influences_only:
        ours = time_dpplayers(X, y, a.solver, refits=False)
        ratio = ours["influences_s"] / ours["forward_s"]
        print(f"{a.solver}: forward {ours['forward_s']:.4f} s, influences "
              f"{ours['influences_s']:.4f} s ({ratio:.2f}x; medians of {REPEATS})")
        return
    ours = time_dpplayers(X, y, a.solver)
    param = time_cvxpy_parametric(X, y, a.subset, a.solver)
    naive = time_cvxpy_naive(X, y, max(a.subset // 4, 3), a.solver)
    sk = time_sklearn(X, y)
    k = a.subset
    same = ~np.zeros(a.n, bool)
    results = {
        "n": a.n, "d": a.d, "solver": a.solver, "eps": EPS, "cores": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "forward_s": ours["forward_s"], "influences_s": ours["influences_s"],
        "forward_all_s": ours["forward_all_s"], "influences_all_s": ours["influences_all_s"],
        "influences_over_forward": ours["influences_s"] / ours["forward_s"],
        "influence_method": ours["influence_method"],
        "loo_batch_s": ours["loo_batch_s"],
        "loo_median_iterations": float(np.median(ours["iterations"])),
        "loo_max_iterations": int(np.max(ours["iterations"])),
        "loo_chord_refits": ours["methods"].count("chord"),
        "loo_solved_refits": ours["methods"].count("solve"),
        "cvxpy_parametric_extrapolated_s": param["per_refit_s"] * a.n,
        "cvxpy_naive_extrapolated_s": naive["per_refit_s"] * a.n,
        "sklearn_s": sk["all_s"],
        "speedup_vs_cvxpy_parametric": param["per_refit_s"] * a.n / ours["loo_batch_s"],
        "speedup_vs_cvxpy_naive": naive["per_refit_s"] * a.n / ours["loo_batch_s"],
        "speedup_vs_sklearn": sk["all_s"] / ours["loo_batch_s"],
        "max_diff_vs_cvxpy": float(np.abs(ours["loo"][:k] - param["fits"]).max()),
        "max_diff_vs_sklearn": float(np.abs(ours["loo"] - sk["fits"]).max()),
        "first_order_correlation": float(np.corrcoef(ours["predicted"][same].ravel(),
                                                     ours["exact"][same].ravel())[0, 1]),
    }
    width = max(len(key) for key in results)
    for key, value in results.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
