"""Property-based checks on random feasible, bounded problems with random cone mixes.

CI runs the short `ci` profile; `HYPOTHESIS_PROFILE=thorough pytest tests/test_properties.py`
runs many more examples locally.
"""

import os
import warnings

import cvxpy as cp
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dpplayers

settings.register_profile("ci", max_examples=12, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REFINED = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "refine": 3}


KINDS = ["ineq", "eq", "soc", "exp", "pow", "psd"]


@st.composite
def random_problems(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(2, 6))
    kinds = draw(st.sets(st.sampled_from(KINDS), min_size=1))
    return build_problem(seed, n, kinds)


def build_problem(seed, n, kinds):
    """min ½‖x‖² + qᵀx + (cone terms) s.t. a random subset of {Gx ≤ h, Ax = b, SOC, exp, pow, psd}.

    Every constraint is satisfied strictly by a drawn x0 (feasible) and the objective is
    strongly convex (bounded, unique solution).
    """
    rng = np.random.default_rng(seed)
    x = cp.Variable(n)
    x0 = rng.uniform(0.2, 1.0, n)
    q = cp.Parameter(n, name="q")
    params, values = [q], [rng.standard_normal(n)]
    objective = 0.5 * cp.sum_squares(x) + q @ x
    constraints = []
    if "ineq" in kinds:
        p = int(rng.integers(1, 5))
        G, h = cp.Parameter((p, n), name="G"), cp.Parameter(p, name="h")
        Gv = rng.standard_normal((p, n))
        params += [G, h]
        values += [Gv, Gv @ x0 + rng.uniform(0.05, 1.0, p)]
        constraints.append(G @ x <= h)
    if "eq" in kinds:
        A, b = cp.Parameter((1, n), name="A"), cp.Parameter(1, name="b")
        Av = rng.standard_normal((1, n))
        params += [A, b]
        values += [Av, Av @ x0]
        constraints.append(A @ x == b)
    if "soc" in kinds:
        r = cp.Parameter(pos=True, name="r")
        params.append(r)
        values.append(np.array(np.linalg.norm(x0) + rng.uniform(0.1, 1.0)))
        constraints.append(cp.norm(x, 2) <= r)
    if "exp" in kinds:
        c = cp.Parameter(n, name="c")
        params.append(c)
        values.append(0.5 * rng.standard_normal(n))
        objective = objective + cp.sum(cp.exp(cp.multiply(0.5, x) + c))
    if "pow" in kinds:
        # x + 4 > 0 at the solution: keeps cvxpy's SOC tower for the power away from its
        # apex, where the canonical program is not strictly complementary
        objective = objective + cp.sum(cp.power(x + 4, 1.5))
    if "psd" in kinds:
        S = cp.Parameter((2, 2), symmetric=True, name="S")
        params.append(S)
        Sv = rng.standard_normal((2, 2))
        values.append((Sv + Sv.T) / 2)
        objective = objective + cp.lambda_max(S + cp.diag(x[:2]))
    problem = cp.Problem(cp.Minimize(objective), constraints)
    return problem, params, [x], values, rng


def directions(params, rng):
    out = []
    for p in params:
        d = rng.standard_normal(p.shape)
        if p.attributes.get("symmetric"):
            d = (d + d.T) / 2
        out.append(d)
    return out


@given(random_problems())
def test_vjp_matches_fd_and_jvp_is_its_transpose(data):
    problem, params, variables, values, rng = data
    prog = dpplayers.compile(problem, params, variables, solver="CLARABEL")
    sol = prog.solve(*values, solver_args=REFINED)
    u = directions(params, rng)
    w = rng.standard_normal(variables[0].shape)
    g = sol.vjp(w)
    lhs = sum(float(np.sum(gi * ui)) for gi, ui in zip(g, u))
    jvp = float(np.sum(w * sol.jvp(*u)[0]))
    assert abs(lhs - jvp) <= 1e-8 * max(1.0, abs(lhs))
    eps = 1e-5
    plus = prog.solve(*[v + eps * d for v, d in zip(values, u)], solver_args=REFINED).values[0]
    minus = prog.solve(*[v - eps * d for v, d in zip(values, u)], solver_args=REFINED).values[0]
    fd = float(np.sum(w * (plus - minus))) / (2 * eps)
    assert abs(lhs - fd) <= 1e-4 * max(1.0, abs(fd)), (lhs, fd)


@given(random_problems())
def test_forward_matches_cvxpy(data):
    problem, params, variables, values, _ = data
    prog = dpplayers.compile(problem, params, variables, solver="SCS")
    sol = prog.solve(*values, solver_args={"eps": 1e-9, "refine": 2})
    for p, v in zip(params, values):
        p.value = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Solution may be inaccurate"
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    # the reference (Clarabel through cvxpy) is the less accurate side on SOC towers for
    # powers (seen: 2.4e-6 off the exact root while the refined answer was 2e-9 off; and
    # 2e-5 off, flagged optimal_inaccurate, where dpplayers on SCS and on Clarabel agreed
    # to 1e-15): only a reference its solver calls accurate is one
    assume(problem.status == cp.OPTIMAL)
    np.testing.assert_allclose(sol.values[0], variables[0].value, rtol=1e-6, atol=1e-5)
