"""Compile time and peak memory with a dense N×N parameter matrix (issue #2's measurement).

Each size runs in a fresh subprocess so peak RSS is that compile's own. The problem is
min ‖A x − b‖₂² + ‖x‖₁ s.t. |x| ≤ 1 with A ∈ ℝ^{N×N} and b parameters (issue #20's).
The libraries are imported before the clock starts; peak RSS includes them. Also times one solve and the
bare SCS solve on the same cone program.

    python benchmarks/compile_scaling.py [N ...]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def measure(n: int, library: str) -> dict:
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
    out = {"n": n, "library": library, "compile_s": seconds, "peak_rss_mb": peak / 1024,
           "rss_increase_mb": (peak - base) / 1024}
    rng = np.random.default_rng(0)
    Av, bv = rng.standard_normal((n, n)) / np.sqrt(n), rng.standard_normal(n)
    if library == "dpplayers":
        start = time.perf_counter()
        sol = prog.solve(Av, bv, solver_args={"eps": 1e-6})
        out["solve_s"] = time.perf_counter() - start
        out["solver_s"] = sol.info[0]["seconds"]
    else:
        start = time.perf_counter()
        layer(torch.tensor(Av), torch.tensor(bv), solver_args={"eps": 1e-6})
        out["solve_s"] = time.perf_counter() - start
    return out


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]), sys.argv[3])))
        sys.exit(0)
    sizes = [int(a) for a in sys.argv[1:]] or [100, 300, 1000]
    for n in sizes:
        for library in ("dpplayers", "cvxpylayers"):
            try:
                res = subprocess.run([sys.executable, __file__, "--one", str(n), library],
                                     capture_output=True, text=True, timeout=900, check=False)
                print(res.stdout.strip() or res.stderr.strip()[-300:], flush=True)
            except subprocess.TimeoutExpired:
                print(json.dumps({"n": n, "library": library, "compile_s": "> 900 (timed out)"}))
