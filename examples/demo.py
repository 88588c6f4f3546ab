"""The main demo: compile a small QP layer, solve a batch, differentiate it, check the gradient.

Run with `bash .ci/setup && .venv/bin/python examples/demo.py` (see README.md).
"""

import time

import cvxpy as cp
import numpy as np

import dpplayers

rng = np.random.default_rng(0)
n, m = 4, 3

# A projection onto a parametrised polyhedron {x : G x <= h}: argmin ½‖x − y‖²
y = cp.Parameter(n, name="y")
G = cp.Parameter((m, n), name="G")
h = cp.Parameter(m, name="h")
x = cp.Variable(n, name="x")
constraint = G @ x <= h
problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - y)), [constraint])

print("1. DPP check")
print(dpplayers.check_dpp(problem, [y, G, h]))

print("\n2. Compile once")
prog = dpplayers.compile(problem, parameters=[y, G, h], variables=[x, constraint.dual_variables[0]])
print(prog)

print("\n3. Solve a batch of 8 (G, h shared, y batched)")
Gv, hv = rng.standard_normal((m, n)), rng.uniform(0.5, 1.0, m)
ys = 2 * rng.standard_normal((8, n))
start = time.perf_counter()
sol = prog.solve(ys, Gv, hv, solver_args={"eps": 1e-9})
print(f"   solved in {1e3 * (time.perf_counter() - start):.1f} ms; statuses: "
      f"{sorted({s.name for s in sol.status})}")
xs, lam = sol.values
print(f"   x[0] = {np.round(xs[0], 4)},  multipliers λ[0] = {np.round(lam[0], 4)}")
for p in (y, G, h):
    p.value = {"y": ys[0], "G": Gv, "h": hv}[p.name()]
problem.solve(solver=cp.CLARABEL)
print(f"   cvxpy's own solve of element 0 agrees to {np.abs(x.value - xs[0]).max():.1e}")

print("\n4. Differentiate: gradient of L = Σ x² with respect to y, G, h (vjp)")
gy, gG, gh = sol.vjp(2 * xs, None)
print(f"   dL/dy[0] = {np.round(gy[0], 4)}")
print(f"   dL/dG shape {gG.shape}, dL/dh shape {gh.shape}")

print("\n5. Check against central finite differences along a random direction")
dy, dG, dh = rng.standard_normal(ys.shape), rng.standard_normal(Gv.shape), rng.standard_normal(hv.shape)
eps = 1e-5


def loss(t):
    # refine: Newton-polish the SCS answer so the difference quotient sees ~1e-14 accuracy
    out = prog.solve(ys + t * dy, Gv + t * dG, hv + t * dh, solver_args={"eps": 1e-9, "refine": 3})
    return float(np.sum(out.values[0] ** 2))


fd = (loss(eps) - loss(-eps)) / (2 * eps)
analytic = float(np.sum(gy * dy) + np.sum(gG * dG) + np.sum(gh * dh))
print(f"   analytic {analytic:.8f}   finite differences {fd:.8f}   "
      f"relative gap {abs(analytic - fd) / abs(fd):.1e}")

print("\n6. Forward mode (jvp) and the full Jacobian of element 0")
dx, _ = sol.jvp(dy, dG, dh)
print(f"   jvp: dx[0] = {np.round(dx[0], 4)}")
jac = prog.solve(ys[0], Gv, hv, solver_args={"eps": 1e-9}).jacobian()
print(f"   dx/dy block:\n{np.round(jac[0][0], 4)}")
