"""Issue #20's figures: a batch of SDPs on a 2-worker Dask LocalCluster against one process,
and compiling a lasso against loading it from the compiled-program cache.

    python benchmarks/distributed.py [--n 40] [--batch 64] [--lasso 1000]

Not a timed test: numbers depend on the machine (record its cores with them). The cluster
runs on this machine, so its speed-up is bounded by the cores it gets; the cache figures
come from fresh processes, so imports and cvxpy's own caches are not counted twice.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# run as a script, this file's folder comes first on sys.path and its name would hide Dask's
# ``distributed`` package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import cvxpy as cp  # noqa: E402
import numpy as np  # noqa: E402

import dpplayers  # noqa: E402


def sdp_program(n: int, constraints: int = 5) -> tuple[dpplayers.CompiledProblem, list]:
    """min ⟨C, X⟩ s.t. ⟨Aᵢ, X⟩ = bᵢ, tr X = 1, X ⪰ 0, with C a symmetric parameter."""
    rng = np.random.default_rng(0)
    C = cp.Parameter((n, n), symmetric=True, name="C")
    X = cp.Variable((n, n), symmetric=True, name="X")
    mats = [(M + M.T) / 2 for M in rng.standard_normal((constraints, n, n))]
    X0 = np.eye(n) / n
    cons = [X >> 0, cp.trace(X) == 1]
    cons += [cp.trace(M @ X) == np.trace(M @ X0) for M in mats]
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.trace(C @ X)), cons), [C], [X])
    values = []
    for _ in range(64 * 4):
        G = rng.standard_normal((n, n))
        values.append((G + G.T) / 2)
    return prog, values


def timed(fn, repeats: int = 2) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sdp_batch(n: int, batch: int) -> dict:
    from distributed import Client, LocalCluster

    prog, pool = sdp_program(n)
    Cs = np.stack(pool[:batch])
    args = {"eps": 1e-6}
    cot = np.ones((batch, n, n))
    out = {"n": n, "batch": batch}
    out["one_process_s"] = timed(lambda: prog.solve(Cs, solver_args={**args, "n_jobs": 1}))
    out["threads_2_s"] = timed(lambda: prog.solve(Cs, solver_args={**args, "n_jobs": 2}))
    out["one_process_solve_and_vjp_s"] = timed(
        lambda: prog.solve(Cs, solver_args={**args, "n_jobs": 1}).vjp(cot))
    start = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    out["cluster_start_s"] = time.perf_counter() - start
    start = time.perf_counter()
    prog.solve(Cs[:2], solver_args=args, executor=client)  # ships the program
    out["first_call_2_elements_s"] = time.perf_counter() - start
    out["cluster_s"] = timed(lambda: prog.solve(Cs, solver_args=args, executor=client))
    out["cluster_solve_and_vjp_s"] = timed(
        lambda: prog.solve_and_vjp(Cs, cotangents=[cot], solver_args=args, executor=client))
    sol = prog.solve(Cs, solver_args=args, executor=client)
    ref = prog.solve(Cs, solver_args=args)
    out["max_value_difference"] = float(np.abs(sol.values[0] - ref.values[0]).max())
    out["speed_up"] = out["one_process_s"] / out["cluster_s"]
    out["speed_up_solve_and_vjp"] = (out["one_process_solve_and_vjp_s"]
                                     / out["cluster_solve_and_vjp_s"])
    client.close()
    cluster.close()
    return out


LASSO = """
import json, sys, time, cvxpy as cp, dpplayers
n = int(sys.argv[1]); cache = sys.argv[2] if sys.argv[2] != "-" else False
A, b, x = cp.Parameter((n, n)), cp.Parameter(n), cp.Variable(n)
prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + cp.norm1(x)), [cp.abs(x) <= 1])
start = time.perf_counter()
dpplayers.compile(prob, [A, b], [x], cache=cache)
print(json.dumps(time.perf_counter() - start))
"""


def cache_times(n: int) -> dict:
    def run(cache: str) -> float:
        done = subprocess.run([sys.executable, "-c", LASSO, str(n), cache], check=True,
                              capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as folder:
        out = {"n": n, "compile_s": run("-"), "compile_and_store_s": run(folder)}
        out["load_s"] = run(folder)
        out["entry_mb"] = sum(os.path.getsize(os.path.join(folder, f))
                              for f in os.listdir(folder)) / 2**20
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lasso", type=int, default=1000)
    a = parser.parse_args()
    print(json.dumps({"cores": os.cpu_count(), "sdp": sdp_batch(a.n, a.batch),
                      "cache": cache_times(a.lasso)}, indent=1))
