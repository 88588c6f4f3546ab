"""Compile time and peak memory with a dense N×N parameter matrix (issues #2 and #20).

Each size runs in a fresh subprocess so peak RSS is that compile's own. The problem is
min ‖A x − b‖₂² + ‖x‖₁ s.t. |x| ≤ 1 with A ∈ ℝ^{N×N} and b parameters (issue #20's).
The libraries are imported before the clock starts; peak RSS includes them. Then one solve
(SCS, ``eps``) and, with ``--check``, CVXPY's own solve of the same problem with A and b
as constants (Clarabel), compared with dpplayers' solution. Every solve also reports the
proximal-gradient residual of its x (zero exactly at the optimum; no solver involved): proof
that the compiled program is the user's problem at sizes where CVXPY cannot compile the
parametrised one.

    python benchmarks/compile_scaling.py [--only dpplayers] [--eps 1e-6] [--max-iters K]
                                         [--no-solve] [--check] [N ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(n: int, library: str, eps: float, max_iters: int | None, solve: bool,
            check: bool) -> dict:
    import cvxpy as cp
    import numpy as np

    A, b = cp.Parameter((n, n)), cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + cp.norm(x, 1)), [cp.abs(x) <= 1])
    if library == "dpplayers":  # imported before the clock starts: compile time, not import
        import dpplayers
    else:
        import torch
        from cvxpylayers.torch import CvxpyLayer
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if library == "dpplayers":
        prog = dpplayers.compile(prob, [A, b], [x])
    else:
        layer = CvxpyLayer(prob, parameters=[A, b], variables=[x])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"n": n, "library": library, "compile_s": round(seconds, 3),
           "peak_rss_mb": round(peak / 1024), "rss_increase_mb": round((peak - base) / 1024)}
    if library == "dpplayers":
        out.update(rows=prog.m, columns=prog.n, nnz_A=int(prog.A.indices.size))
    if not solve:
        return out
    rng = np.random.default_rng(0)
    Av, bv = rng.standard_normal((n, n)) / np.sqrt(n), rng.standard_normal(n)
    args = {"eps": eps} | ({"max_iters": max_iters} if max_iters else {})
    start = time.perf_counter()
    if library == "dpplayers":
        sol = prog.solve(Av, bv, solver_args=args, inaccurate="warn")
        out["solve_s"] = round(time.perf_counter() - start, 3)
        out["setup_s"] = round(sol.info[0]["setup_seconds"], 3)
        out["solver_s"] = round(sol.info[0]["seconds"], 3)
        out["iterations"] = sol.info[0]["iterations"]
        out["status"] = str(sol.status[0])
        out["peak_rss_after_solve_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        ours = sol.values[0]
        out["prox_residual"] = prox_residual(Av, bv, ours)
        if check:
            ref = cp.Variable(n)
            cp.Problem(cp.Minimize(cp.sum_squares(Av @ ref - bv) + cp.norm(ref, 1)),
                       [cp.abs(ref) <= 1]).solve(solver=cp.CLARABEL)
            out["max_abs_diff_vs_cvxpy"] = float(np.abs(ours - ref.value).max())
            objective = lambda z: float(np.sum((Av @ z - bv) ** 2) + np.abs(z).sum())
            out["objective"], out["objective_cvxpy"] = objective(ours), objective(ref.value)
    else:
        layer(torch.tensor(Av), torch.tensor(bv), solver_args=args)
        out["solve_s"] = round(time.perf_counter() - start, 3)
    return out


def prox_residual(A, b, x) -> float:
    """max |x − prox(x − t∇f(x))| / t for f = ‖Ax − b‖², the prox of t(‖·‖₁ + the box):
    zero exactly at the optimum, computed without any solver (t = 1/L, L = 2‖A‖²_F ≥ f's
    Lipschitz constant)."""
    import numpy as np

    t = 1.0 / (2.0 * float(np.sum(A * A)))
    v = x - t * 2.0 * (A.T @ (A @ x - b))
    prox = np.clip(np.sign(v) * np.maximum(np.abs(v) - t, 0.0), -1.0, 1.0)
    return float(np.abs(x - prox).max() / t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 300, 1000])
    parser.add_argument("--only", choices=("dpplayers", "cvxpylayers"))
    parser.add_argument("--eps", type=float, default=1e-6)
    parser.add_argument("--max-iters", type=int)
    parser.add_argument("--no-solve", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("N", "LIBRARY"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps(measure(int(opts.one[0]), opts.one[1], opts.eps, opts.max_iters,
                                 not opts.no_solve, opts.check)))
        return
    flags = [f"--eps={opts.eps}"] + ([f"--max-iters={opts.max_iters}"] if opts.max_iters else [])
    flags += ["--no-solve"] * opts.no_solve + ["--check"] * opts.check
    for n in opts.sizes:
        for library in [opts.only] if opts.only else ["dpplayers", "cvxpylayers"]:
            try:
                res = subprocess.run([sys.executable, __file__, "--one", str(n), library, *flags],
                                     capture_output=True, text=True, timeout=900, check=False)
                print(res.stdout.strip() or res.stderr.strip()[-300:], flush=True)
            except subprocess.TimeoutExpired:
                print(json.dumps({"n": n, "library": library, "compile_s": "> 900 (timed out)"}))


if __name__ == "__main__":
    main()
