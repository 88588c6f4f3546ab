"""Split parameter-matrix products (``_compile/products.py``, issue #20 item 6).

A product ``P @ v`` with a parameter ``P`` of at least ``SPLIT_MIN_ENTRIES`` entries is
replaced by a variable ``u`` before cvxpy compiles, and the rows ``u − P w = 0`` are added
by dpplayers. The problems here are large enough to be split as they stand (a 520 × 500
``A``); each is compiled with its parameters unset and checked at two parameter points
against CVXPY's own solve (values and duals), against finite differences (jvp, vjp) and
against the unsplit path (the same problem compiled with splitting switched off, which
is cvxpy's canonicalisation of the product).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers._compile import canonical, products
from dpplayers._compile.products import SPLIT_MIN_ENTRIES, split_parameter_products

M, N = 520, 500  # A is M × N: 260,000 entries, above the split threshold
TIGHT = {"eps": 1e-8, "refine": 2}  # Clarabel, then Newton polishing to rounding level
assert M * N >= SPLIT_MIN_ENTRIES  # the problems below take the split path as written


def lasso(m: int = M, n: int = N):
    """The benchmark's problem: min ‖Ax − b‖² + ‖x‖₁ s.t. |x| ≤ 1 (here m × n)."""
    A, b = cp.Parameter((m, n), name="A"), cp.Parameter(m, name="b")
    c = cp.Parameter(m, name="c")
    x = cp.Variable(n, name="x")
    box, upper = cp.abs(x) <= 1, A @ x <= c  # the same product twice: one u
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + 0.3 * cp.norm(x, 1)),
                         [box, upper])
    return problem, [A, b, c], [x, box.dual_variables[0], upper.dual_variables[0]]


def lasso_values(rng, m: int = M, n: int = N) -> list[np.ndarray]:
    A, b = rng.standard_normal((m, n)) / np.sqrt(m), rng.standard_normal(m)
    return [A, b, A @ rng.uniform(-0.2, 0.2, n) + rng.uniform(0.0, 0.4, m)]


def least_squares_values(rng) -> list[np.ndarray]:
    return lasso_values(rng)[:2]


def constrained():
    """A product in a constraint whose dual is requested, the same product again in the
    objective (one u for both), a matrix variable times the parameter, and a product with
    a non-bare argument (2x − 1: a new w with w == 2x − 1)."""
    A, c = cp.Parameter((M, N), name="A"), cp.Parameter(M, name="c")
    B = cp.Parameter((M, N), name="B")
    x, X = cp.Variable(N, name="x"), cp.Variable((N, 2), name="X")
    p = cp.Parameter(N, name="p")
    ineq = A @ x <= c
    cons = [ineq, cp.sum(A @ X, axis=0) <= 1, cp.norm(B @ (2 * x - 1), 2) <= 20]
    objective = (0.5 * cp.sum_squares(x - p) + 0.05 * cp.sum(A @ x)
                 + 0.5 * cp.sum_squares(X) + 0.1 * cp.sum(B @ X))
    problem = cp.Problem(cp.Minimize(objective), cons)
    return problem, [A, c, B, p], [x, X, ineq.dual_variables[0], cons[1].dual_variables[0],
                                   cons[2].dual_variables[0]]


def constrained_values(rng) -> list[np.ndarray]:
    A = rng.standard_normal((M, N)) / np.sqrt(N)
    return [A, 0.5 + rng.uniform(0, 1, M), rng.standard_normal((M, N)) / np.sqrt(N),
            rng.standard_normal(N)]


def only_in_product():
    """x appears only inside A @ x: cvxpy would drop it, so w == x keeps it."""
    A, b = cp.Parameter((M, N), name="A"), cp.Parameter(M, name="b")
    x = cp.Variable(N, name="x")
    return cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b))), [A, b], [x]


def in_quadratic():
    """u = A x where cvxpy's quadratic objective needs it as a variable (‖u‖² in P): u stays,
    with its rows u − A x = 0, where cvxpy would put its own auxiliary."""
    A, q = cp.Parameter((M, N), name="A"), cp.Parameter(N, name="q")
    x = cp.Variable(N, name="x")
    return (cp.Problem(cp.Minimize(cp.sum_squares(A @ x) + 0.1 * cp.sum_squares(x) - q @ x)),
            [A, q], [x])


def in_quadratic_values(rng) -> list[np.ndarray]:
    return [rng.standard_normal((M, N)) / np.sqrt(M), rng.standard_normal(N)]


BUILDERS = {
    "lasso": (lasso, lasso_values),
    "constrained": (constrained, constrained_values),
    "only_in_product": (only_in_product, least_squares_values),
    "in_quadratic": (in_quadratic, in_quadratic_values),
}
#: ``constrained`` holds four products of 260,000 entries: the unsplit reference and CVXPY
#: take minutes on it, so it runs with the exhaustive cases.
NAMES = [pytest.param(name, marks=pytest.mark.slow) if name == "constrained" else name
         for name in BUILDERS]
#: The lasso's 500 entries of |x_i| put kinks within reach of any finite-difference step
#: that re-solves can resolve; its derivatives are checked against the unsplit path.
SMOOTH = [name for name in NAMES if name != "lasso"]


def unsplit(build):
    """The same problem compiled the way cvxpy canonicalises the product (the reference)."""
    problem, params, outputs = build()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(products, "SPLIT_MIN_ENTRIES", np.inf)
        return dpplayers.compile(problem, params, outputs, solver="CLARABEL")


def cvxpy_solution(problem, params, outputs, values):
    """CVXPY's own solve (Clarabel) at ``values``: the requested variables and duals."""
    for param, value in zip(params, values):
        param.value = value
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    values = [out.value for out in outputs]
    for param in params:
        param.value = None
    return values


@pytest.mark.parametrize("name", NAMES)
def test_split_happens(name):
    """Each product is split, and put back: the program has the sizes and cones of cvxpy's
    own (u substituted by P w, or standing where cvxpy would put its own auxiliary), plus
    the equalities w == v of arguments that are not bare variables."""
    problem, params, _ = BUILDERS[name][0]()
    rewritten, splits = split_parameter_products(problem, params)
    assert splits and rewritten is not problem
    assert not any(s.matrix.id in {p.id for p in rewritten.parameters()} for s in splits)
    reference = unsplit(BUILDERS[name][0])
    prog = dpplayers.compile(problem, params)
    equalities = sum(con.size for con in rewritten.constraints[len(problem.constraints):])
    assert (prog.n, prog.m) == (reference.n + equalities, reference.m + equalities)
    assert prog.cones.zero == reference.cones.zero + equalities
    assert (prog.cones.nonneg, prog.cones.soc) == (reference.cones.nonneg, reference.cones.soc)
    # and the same entries: one per entry of each P and use, plus w and v's in w == v
    # (here v = x or 2x − 1: one entry each per row)
    assert prog.A.indices.size == reference.A.indices.size + 2 * equalities


@pytest.mark.parametrize("name", NAMES)
def test_values_and_duals_match_cvxpy(name):
    build, sample = BUILDERS[name]
    problem, params, outputs = build()
    prog = dpplayers.compile(problem, params, outputs, solver="CLARABEL")  # values unset
    rng = np.random.default_rng(1)
    for _ in range(2):  # two parameter points
        values = sample(rng)
        ours = prog.solve(*values, solver_args=TIGHT).values
        ref = cvxpy_solution(problem, params, outputs, values)
        for got, want in zip(ours, ref):
            np.testing.assert_allclose(got, want, atol=2e-6 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("name", NAMES)
def test_same_values_and_derivatives_as_unsplit(name):
    build, sample = BUILDERS[name]
    problem, params, outputs = build()
    prog = dpplayers.compile(problem, params, outputs, solver="CLARABEL")
    reference = unsplit(build)
    rng = np.random.default_rng(2)
    for _ in range(2):
        values = sample(rng)
        sol, ref = prog.solve(*values, solver_args=TIGHT), reference.solve(*values, solver_args=TIGHT)
        for got, want in zip(sol.values, ref.values):
            np.testing.assert_allclose(got, want, atol=1e-7 * max(1.0, np.abs(want).max()))
        cotangents = [rng.standard_normal(v.shape) for v in sol.values]
        for got, want in zip(sol.vjp(*cotangents), ref.vjp(*cotangents)):
            np.testing.assert_allclose(got, want, atol=1e-6 * max(1.0, np.abs(want).max()))
        tangents = [rng.standard_normal(v.shape) for v in values]
        for got, want in zip(sol.jvp(*tangents), ref.jvp(*tangents)):
            np.testing.assert_allclose(got, want, atol=1e-6 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("name", SMOOTH)
def test_derivatives_match_finite_differences(name):
    """jvp along a random direction against central differences of CVXPY-independent
    re-solves, and vjp as its adjoint (⟨g, J d⟩ = ⟨Jᵀ g, d⟩), at two points."""
    build, sample = BUILDERS[name]
    problem, params, outputs = build()
    prog = dpplayers.compile(problem, params, outputs, solver="CLARABEL")
    rng = np.random.default_rng(3)
    h = 1e-5
    for _ in range(2):
        values = sample(rng)
        sol = prog.solve(*values, solver_args=TIGHT)
        direction = [rng.standard_normal(v.shape) for v in values]
        plus = prog.solve(*[v + h * d for v, d in zip(values, direction)], solver_args=TIGHT)
        minus = prog.solve(*[v - h * d for v, d in zip(values, direction)], solver_args=TIGHT)
        jvp = sol.jvp(*direction)
        for k, (dv, vp, vm) in enumerate(zip(jvp, plus.values, minus.values)):
            fd = (vp - vm) / (2 * h)
            np.testing.assert_allclose(dv, fd, atol=1e-4 * max(1.0, np.abs(fd).max()),
                                       err_msg=f"output {k}")
        cotangents = [rng.standard_normal(v.shape) for v in sol.values]
        vjp = sol.vjp(*cotangents)
        lhs = sum(float(np.sum(g * j)) for g, j in zip(cotangents, jvp))
        rhs = sum(float(np.sum(g * d)) for g, d in zip(vjp, direction))
        assert abs(lhs - rhs) <= 1e-7 * max(1.0, abs(lhs))


def test_parameter_also_used_elsewhere():
    """A split parameter that cvxpy also sees (sum(A) * y): both uses enter θ."""
    A, b = cp.Parameter((M, N), name="A"), cp.Parameter(M, name="b")
    x, y = cp.Variable(N), cp.Variable()
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + cp.sum_squares(x)
                                     + cp.square(y) - cp.sum(A) * y / M))
    _, splits = split_parameter_products(problem, [A, b])
    assert len(splits) == 1
    prog = dpplayers.compile(problem, [A, b], [x, y], solver="CLARABEL")
    rng = np.random.default_rng(4)
    for _ in range(2):
        values = least_squares_values(rng)
        ours = prog.solve(*values, solver_args=TIGHT).values
        for got, want in zip(ours, cvxpy_solution(problem, [A, b], [x, y], values)):
            np.testing.assert_allclose(got, want, atol=1e-6)
        sol = prog.solve(*values, solver_args=TIGHT)
        gA, _ = sol.vjp(np.zeros(N), np.ones(()))
        # y = sum(A) / (2M): d y / d A_ij = 1 / (2M) for every entry (x does not depend on y)
        np.testing.assert_allclose(gA, 1 / (2 * M), atol=1e-7)


def _declines(problem, params) -> bool:
    rewritten, splits = split_parameter_products(problem, params)
    return not splits and rewritten is problem


def test_declines_small_matrix():
    A = cp.Parameter((10, 10))
    x = cp.Variable(10)
    assert _declines(cp.Problem(cp.Minimize(cp.sum_squares(A @ x))), [A])


def test_declines_quad_form_and_parameter_products():
    P = cp.Parameter((N, N), PSD=True)
    A, q = cp.Parameter((N, N)), cp.Parameter(N)
    x = cp.Variable(N)
    assert _declines(cp.Problem(cp.Minimize(cp.quad_form(x, P))), [P])  # P is not in a product
    assert _declines(cp.Problem(cp.Minimize(cp.sum(x)), [x <= A @ q]), [A, q])  # P @ parameter
    assert _declines(cp.Problem(cp.Minimize(cp.sum(x)), [x <= A @ (x + q)]), [A, q])
    assert _declines(cp.Problem(cp.Minimize(cp.sum_squares(P @ x))), [P])  # attribute
    assert _declines(cp.Problem(cp.Minimize(cp.sum_squares(A.T @ x))), [A])  # not a bare P
    assert _declines(cp.Problem(cp.Minimize(cp.sum_squares(x @ A))), [A])  # variable first


def test_declines_known_sign_and_complex():
    A = cp.Parameter((N, N), nonneg=True)
    x = cp.Variable(N, nonneg=True)
    # A @ x is known nonnegative: cvxpy's DCP analysis may rely on it, a new u has no sign
    assert _declines(cp.Problem(cp.Minimize(cp.sum_squares(A @ x + cp.pos(x)))), [A])
    B = cp.Parameter((N, N))
    z = cp.Variable(N, complex=True)
    assert _declines(cp.Problem(cp.Minimize(cp.sum_squares(cp.abs(B @ z)))), [B])


def test_declines_under_perspective():
    A = cp.Parameter((N, N))
    x, s = cp.Variable(N), cp.Variable(nonneg=True)
    f = cp.sum_squares(A @ x)
    problem = cp.Problem(cp.Minimize(cp.perspective(f, s)), [s <= 1, cp.sum(x) == 1])
    assert _declines(problem, [A])


def test_gp_is_not_split(monkeypatch):
    """gp=True compiles in log space (Dgp2Dcp), where a parameter enters through its log:
    the compiler never splits there. (In a DGP problem every product of a parameter and a
    variable is positive, so the sign rule would decline it too.)"""
    A = cp.Parameter((N, N), pos=True)
    x = cp.Variable(N, pos=True)
    assert _declines(cp.Problem(cp.Minimize(cp.sum(A @ x) + cp.sum(x ** -1))), [A])

    def refuse(*args):
        raise AssertionError("split_parameter_products called with gp=True")

    monkeypatch.setattr(canonical, "split_parameter_products", refuse)
    B = cp.Parameter((4, 4), pos=True)
    y = cp.Variable(4, pos=True)
    problem = cp.Problem(cp.Minimize(cp.sum(B @ y) + cp.sum(y ** -1)))
    prog = dpplayers.compile(problem, [B], [y], gp=True, solver="CLARABEL")
    rng = np.random.default_rng(5)
    for _ in range(2):
        value = rng.uniform(0.5, 1.5, (4, 4))
        ours = prog.solve(value, solver_args=TIGHT).values[0]
        B.value = value
        problem.solve(gp=True, solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11,
                      tol_feas=1e-11)
        B.value = None
        np.testing.assert_allclose(ours, y.value, rtol=1e-6)
