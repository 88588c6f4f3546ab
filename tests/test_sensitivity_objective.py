"""The optimal value and its gradient (``of="objective"``) against CVXPY's ``problem.value``:
central finite differences of CVXPY's own re-solves along random directions, on every
smooth case of the zoo (LP, QP, SOCP, SDP, exp, pow, GP), and closed forms where simple.

Every program is compiled with parameter values unset and checked at two parameter points.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from helpers import CASES, names

import dpplayers
from dpplayers import DerivativeError
from dpplayers.sensitivity import validate

SEEDS = (0, 1)
TIGHT = {"eps": 1e-10, "refine": 2}
CLARABEL_TIGHT = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11,
                  "max_iter": 500}


def _value(case, values) -> float:
    """CVXPY's optimal value at ``values`` (Clarabel, tight)."""
    for p, v in zip(case.parameters, values):
        p.value = v
    case.problem.solve(solver="CLARABEL", gp=case.gp, **CLARABEL_TIGHT)
    return float(case.problem.value)


def _direction(param: cp.Parameter, value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random direction that keeps the parameter's attributes for small steps: entries
    scaled by the value's own magnitude (a zero entry of a nonneg parameter stays zero), and
    symmetric for symmetric/PSD parameters."""
    u = rng.uniform(-1.0, 1.0, np.shape(value))
    if param.is_symmetric() and u.ndim == 2 and u.shape[0] == u.shape[1] and u.shape[0] > 1:
        u = (u + u.T) / 2
    return u * (np.abs(value) + (0.0 if param.is_nonneg() or param.is_nonpos() else 0.1))


@pytest.mark.parametrize("name", names(smooth_only=True))
def test_objective_gradient_matches_finite_differences_of_cvxpy(name):
    case = CASES[name]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables, gp=case.gp)
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        values = [np.asarray(v, dtype=float) for v in case.sample(rng)]
        sol = prog.solve(*values, solver_args=TIGHT)
        reference = _value(case, values)
        assert abs(sol.objective - reference) <= 1e-6 * (1 + abs(reference)), name
        grad = sol.objective_gradient()
        dirs = [_direction(p, v, rng) for p, v in zip(case.parameters, values)]
        h = 1e-5
        up = _value(case, [v + h * d for v, d in zip(values, dirs)])
        down = _value(case, [v - h * d for v, d in zip(values, dirs)])
        fd = (up - down) / (2 * h)
        ours = sum(float(np.sum(g * d)) for g, d in zip(grad, dirs))
        assert abs(ours - fd) <= 1e-4 * (1 + abs(fd)), (name, seed, ours, fd)


def test_lp_offset_and_closed_form():
    """min cᵀx + 3k s.t. lo ≤ x ≤ hi: p* = Σ min(cᵢ loᵢ, cᵢ hiᵢ) + 3k, so ∂p*/∂c = x*,
    ∂p*/∂lo = max(c, 0)... and ∂p*/∂k = 3 (a parameter in the objective's constant)."""
    c, lo, hi, k = (cp.Parameter(4, name="c"), cp.Parameter(4, name="lo"),
                    cp.Parameter(4, name="hi"), cp.Parameter(name="k"))
    x = cp.Variable(4, name="x")
    problem = cp.Problem(cp.Minimize(c @ x + 3 * k), [x >= lo, x <= hi])
    prog = dpplayers.compile(problem, [c, lo, hi, k], [x])
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        cv, lov = rng.choice([-1.0, 1.0], 4) * rng.uniform(0.5, 2, 4), rng.uniform(-2, -1, 4)
        hiv, kv = rng.uniform(1, 2, 4), np.array(rng.normal())
        sol = prog.solve(cv, lov, hiv, kv, solver_args=TIGHT)
        xstar = np.where(cv > 0, lov, hiv)
        assert np.isclose(sol.objective, cv @ xstar + 3 * kv, atol=1e-8)
        gc, glo, ghi, gk = sol.objective_gradient()
        np.testing.assert_allclose(gc, xstar, atol=1e-7)
        np.testing.assert_allclose(glo, np.maximum(cv, 0), atol=1e-7)
        np.testing.assert_allclose(ghi, np.minimum(cv, 0), atol=1e-7)
        assert np.isclose(gk, 3.0)


def test_maximize_quad_form_closed_form():
    """max −½xᵀQx + qᵀx on the simplex (Maximize, a PSD parameter in P): ∂p*/∂Q = −½x xᵀ
    and ∂p*/∂q = x, where x is the maximiser."""
    Q, q = cp.Parameter((3, 3), PSD=True, name="Q"), cp.Parameter(3, name="q")
    x = cp.Variable(3, name="x")
    problem = cp.Problem(cp.Maximize(-0.5 * cp.quad_form(x, Q) + q @ x), [cp.sum(x) == 1, x >= 0])
    prog = dpplayers.compile(problem, [Q, q], [x])
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        L = rng.normal(size=(3, 3))
        Qv, qv = L @ L.T + np.eye(3), rng.normal(size=3)
        sol = prog.solve(Qv, qv, solver_args=TIGHT)
        xs = sol.values[0]
        assert np.isclose(sol.objective, -0.5 * xs @ Qv @ xs + qv @ xs, atol=1e-8)
        gQ, gq = sol.objective_gradient()
        np.testing.assert_allclose(gQ, -0.5 * np.outer(xs, xs), atol=1e-7)
        np.testing.assert_allclose(gq, xs, atol=1e-7)


def test_entropy_is_log_sum_exp_and_its_gradient_softmax():
    """max Σ entr(x) + rᵀx on the simplex = log Σ exp(r) (exponential cones), gradient
    softmax(r); batched, each element against its closed form."""
    r = cp.Parameter(5, name="r")
    x = cp.Variable(5, name="x")
    problem = cp.Problem(cp.Maximize(cp.sum(cp.entr(x)) + r @ x), [cp.sum(x) == 1])
    prog = dpplayers.compile(problem, [r], [x])
    R = np.random.default_rng(3).normal(size=(2, 5))
    sol = prog.solve(R, solver_args=TIGHT)
    lse = np.log(np.exp(R).sum(axis=1))
    np.testing.assert_allclose(sol.objective, lse, atol=1e-7)
    soft = np.exp(R - lse[:, None])
    np.testing.assert_allclose(sol.objective_gradient()[0], soft, atol=1e-6)


def test_gp_closed_form():
    """gp=True: min x + y s.t. x y ≥ a has p* = 2√a, ∂p*/∂a = 1/√a (through the log)."""
    a = cp.Parameter(pos=True, name="a")
    x, y = cp.Variable(pos=True), cp.Variable(pos=True)
    problem = cp.Problem(cp.Minimize(x + y), [x * y >= a])
    prog = dpplayers.compile(problem, [a], [x], gp=True)
    for av in (0.5, 3.0):
        sol = prog.solve(np.array(av), solver_args=TIGHT)
        assert np.isclose(sol.objective, 2 * np.sqrt(av), rtol=1e-7)
        assert np.isclose(sol.objective_gradient()[0], 1 / np.sqrt(av), rtol=1e-6)


def test_labelled_objective_block():
    """of="objective" (or the problem's objective object) alongside variables: the block is
    the gradient, named "objective" with shape (), listed in the order asked."""
    case = CASES["socp_norm_residual"]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables)
    values = case.sample(np.random.default_rng(0))
    sol = prog.solve(*values, solver_args=TIGHT)
    var = case.variables[0]
    sens = sol.sensitivity(of=[var, "objective"], wrt=list(case.parameters))
    assert sens.outputs[1] == "objective" and sens.output_shapes[1] == ()
    grad = sol.objective_gradient()
    for j, name in enumerate(sens.parameters):
        np.testing.assert_array_equal(sens.block("objective", name), grad[j])
    jac = sol.jacobian()
    np.testing.assert_allclose(sens.blocks[0][0], jac[0][0], atol=1e-9)
    alone = sol.sensitivity(of=case.problem.objective)
    assert alone.outputs == ("objective",) and alone.method == "objective"
    frame = alone.to_frame()
    assert set(frame["output"]) == {"objective"}
    assert np.isclose(frame["value"].abs().sum(), sum(np.abs(g).sum() for g in grad))


def test_objective_errors_name_the_problem():
    case = CASES["lp_box"]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables)
    values = case.sample(np.random.default_rng(0))
    sol = prog.solve(*values)
    with pytest.raises(DerivativeError, match="not this program's objective"):
        sol.sensitivity(of=cp.Minimize(cp.sum(case.variables[0])))
    with pytest.raises(DerivativeError, match="offered by sensitivity"):
        validate(prog, values, of="objective")
    object.__setattr__(prog, "C_d", None)  # as a program pickled by an older version
    with pytest.raises(DerivativeError, match="objective cannot be evaluated.*compile the problem again"):
        sol.sensitivity(of="objective")
    with pytest.raises(DerivativeError, match="objective cannot be evaluated"):
        _ = sol.objective
