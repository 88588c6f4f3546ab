"""Problems for the cvxpylayers compatibility suites (test_compat_torch.py, test_compat_jax.py).

Each builder re-expresses a problem from cvxpylayers' documentation (its README's examples:
the 1-norm fit with parameters A and b, the dual-variable LP, the log-log convex program) or
from its examples folder (argmin forms of ReLU, sigmoid, softmax and sparsemax, the OptNet
QP), plus one problem per remaining cone (second-order, power, PSD). Every builder makes a
fresh cvxpy problem, so the two libraries under comparison never share one.

Oracles independent of both layers: ``closed_form`` where the solution map has one (ReLU,
sigmoid, softmax, sparsemax, ball and PSD projections, the power-cone problem), else
CVXPY's own solve (``cvxpy_outputs``); ``cvxpy_directional`` is a central difference of
CVXPY solves for checking gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

Values = list[np.ndarray]


@dataclass(frozen=True)
class Example:
    """A parametrised problem, the outputs a layer returns, and how to sample and check it."""

    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[cp.Variable]  # primal variables and/or constraint dual variables
    sample: Callable[[np.random.Generator], Values]
    closed_form: Callable[..., Values] | None = None
    gp: bool = False


CLARABEL_TIGHT = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11,
                  "tol_ktratio": 1e-10}


def symmetric_parameters(example: Example) -> list[bool]:
    """Which parameters cvxpy holds to symmetry (their gradients are defined up to skew parts)."""
    return [bool(p.attributes.get("symmetric") or p.attributes.get("PSD")
                 or p.attributes.get("NSD")) for p in example.parameters]


def cvxpy_outputs(build: Callable[[], Example], values: Values) -> Values:
    """The layer's outputs as CVXPY's own Clarabel solve gives them (one unbatched element)."""
    example = build()
    for p, v in zip(example.parameters, values):
        p.value = np.asarray(v, dtype=float)
    example.problem.solve(solver="CLARABEL", gp=example.gp, **CLARABEL_TIGHT)
    assert example.problem.status == cp.OPTIMAL, example.problem.status
    return [np.asarray(v.value, dtype=float) for v in example.variables]


def cvxpy_directional(build: Callable[[], Example], values: Values, direction: Values,
                      weights: Values, h: float = 1e-3) -> float:
    """Central difference, along ``direction``, of ⟨weights, outputs⟩ through CVXPY solves."""

    def loss(sign: float) -> float:
        moved = [v + sign * h * d for v, d in zip(values, direction)]
        return sum(float(np.sum(w * o)) for w, o in zip(weights, cvxpy_outputs(build, moved)))

    return (loss(1.0) - loss(-1.0)) / (2 * h)


# ------------------------------------------------------------------ cvxpylayers' README


def readme_lp() -> Example:
    """The README's first example: a nonnegative 1-norm fit, parameters A (3×2) and b."""
    x, A, b = cp.Variable(2), cp.Parameter((3, 2)), cp.Parameter(3)
    problem = cp.Problem(cp.Minimize(0.5 * cp.pnorm(A @ x - b, p=1)), [x >= 0])
    return Example(problem, [A, b], [x],
                   lambda rng: [rng.standard_normal((3, 2)), rng.standard_normal(3)])


def readme_duals() -> Example:
    """The README's dual-variable example: min c·x, sum(x) = b, x ≥ 0, returning x and the
    equality's multiplier."""
    x, c, b = cp.Variable(2), cp.Parameter(2), cp.Parameter()
    balance = cp.sum(x) == b
    problem = cp.Problem(cp.Minimize(c @ x), [balance, x >= 0])
    return Example(problem, [c, b], [x, balance.dual_variables[0]],
                   lambda rng: [rng.uniform(0.5, 2.0, 2) + np.array([0.0, 1.0]),
                                np.array(rng.uniform(0.5, 2.0))])


def box_projection_duals() -> Example:
    """Projection onto a box [lo, hi] returning the point and both bounds' multipliers (a
    smooth dual map, unlike the README LP's)."""
    x, y = cp.Variable(4), cp.Parameter(4)
    lo, hi = cp.Parameter(4), cp.Parameter(4)
    below, above = x >= lo, x <= hi
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [below, above])

    def sample(rng):
        # two coordinates clipped (one at each bound), two free, all away from the kinks
        lo_v, hi_v = -np.ones(4) - rng.uniform(0, 0.2, 4), np.ones(4) + rng.uniform(0, 0.2, 4)
        y_v = np.array([-2.0, 2.0, 0.3, -0.4]) + rng.uniform(-0.1, 0.1, 4)
        return [y_v, lo_v, hi_v]

    def closed_form(y_v, lo_v, hi_v):
        x_v = np.clip(y_v, lo_v, hi_v)
        return [x_v, 2 * np.maximum(lo_v - y_v, 0), 2 * np.maximum(y_v - hi_v, 0)]

    return Example(problem, [y, lo, hi], [x, below.dual_variables[0], above.dual_variables[0]],
                   sample, closed_form)


def matrix_box_duals() -> Example:
    """A matrix variable clipped from below by a matrix parameter, returning the (2×3)
    multiplier: checks that matrices come back in cvxpy's (column-major) layout."""
    X, Y, L = cp.Variable((2, 3)), cp.Parameter((2, 3)), cp.Parameter((2, 3))
    floor = X >= L
    problem = cp.Problem(cp.Minimize(cp.sum_squares(X - Y)), [floor])

    def sample(rng):
        Y_v = rng.standard_normal((2, 3))
        gaps = np.array([[0.5, -0.5, 0.4], [-0.6, 0.3, -0.3]]) + rng.uniform(-0.1, 0.1, (2, 3))
        return [Y_v, Y_v + gaps]  # clipped where the gap is positive

    def closed_form(Y_v, L_v):
        return [np.maximum(Y_v, L_v), 2 * np.maximum(L_v - Y_v, 0)]

    return Example(problem, [Y, L], [X, floor.dual_variables[0]], sample, closed_form)


def ball_projection_dual(n: int = 3) -> Example:
    """Projection onto the unit ball returning the norm constraint's multiplier,
    2(‖y‖ − 1) for y outside the ball."""
    x, y = cp.Variable(n), cp.Parameter(n)
    inside = cp.norm(x, 2) <= 1
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [inside])

    def sample(rng):
        v = rng.standard_normal(n)
        return [v / np.linalg.norm(v) * rng.uniform(1.5, 3.0)]

    def closed_form(y_v):
        norm = np.linalg.norm(y_v)
        return [y_v / norm, np.array(2 * (norm - 1))]

    return Example(problem, [y], [x, inside.dual_variables[0]], sample, closed_form)


def relu_nonneg_variable(n: int = 5) -> Example:
    """ReLU written with a ``nonneg=True`` variable instead of a constraint."""
    x, y = cp.Parameter(n), cp.Variable(n, nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)))

    def sample(rng):
        return [rng.choice([-1.0, 1.0], n) * rng.uniform(0.2, 1.5, n)]

    return Example(problem, [x], [y], sample, lambda x_v: [np.maximum(x_v, 0)])


def softmax_dual(n: int = 4) -> Example:
    """Softmax returning the simplex equality's multiplier too (exp cones)."""
    x, y = cp.Parameter(n), cp.Variable(n)
    total = cp.sum(y) == 1
    problem = cp.Problem(cp.Minimize(-x @ y - cp.sum(cp.entr(y))), [total])
    return Example(problem, [x], [y, total.dual_variables[0]],
                   lambda rng: [rng.uniform(-1.5, 1.5, n)])


def readme_gp() -> Example:
    """The README's log-log convex program; ``c`` is an exponent (``y ** c``)."""
    x, y, z = (cp.Variable(pos=True) for _ in range(3))
    a, b, c = cp.Parameter(pos=True), cp.Parameter(pos=True), cp.Parameter()
    problem = cp.Problem(cp.Minimize(1 / (x * y * z)),
                         [a * (x * y + x * z + y * z) <= b, x >= y ** c])
    return Example(problem, [a, b, c], [x, y, z],
                   lambda rng: [np.array(rng.uniform(1.5, 2.5)), np.array(rng.uniform(0.8, 1.2)),
                                np.array(rng.uniform(0.3, 0.7))], gp=True)


def gp_coefficients() -> Example:
    """The README's program with its exponent fixed (0.5): parameters only as coefficients."""
    x, y, z = (cp.Variable(pos=True) for _ in range(3))
    a, b = cp.Parameter(pos=True), cp.Parameter(pos=True)
    problem = cp.Problem(cp.Minimize(1 / (x * y * z)),
                         [a * (x * y + x * z + y * z) <= b, x >= y ** 0.5])
    return Example(problem, [a, b], [x, y, z],
                   lambda rng: [np.array(rng.uniform(1.5, 2.5)),
                                np.array(rng.uniform(0.8, 1.2))], gp=True)


# ------------------------------------------------- cvxpylayers' examples: argmin layers


def relu(n: int = 5) -> Example:
    """ReLU as the projection onto the nonnegative orthant."""
    x, y = cp.Parameter(n), cp.Variable(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [y >= 0])

    def sample(rng):  # |x| ≥ 0.2: away from the kink
        return [rng.choice([-1.0, 1.0], n) * rng.uniform(0.2, 1.5, n)]

    return Example(problem, [x], [y], sample, lambda x_v: [np.maximum(x_v, 0)])


def sigmoid(n: int = 4) -> Example:
    """The logistic sigmoid as the maximiser of x·y plus binary entropy (exp cones)."""
    x, y = cp.Parameter(n), cp.Variable(n)
    problem = cp.Problem(cp.Minimize(-x @ y - cp.sum(cp.entr(y) + cp.entr(1 - y))))
    return Example(problem, [x], [y], lambda rng: [rng.uniform(-2, 2, n)],
                   lambda x_v: [1 / (1 + np.exp(-x_v))])


def softmax(n: int = 4) -> Example:
    """Softmax as the entropy-regularised maximiser over the simplex (exp cones)."""
    x, y = cp.Parameter(n), cp.Variable(n)
    problem = cp.Problem(cp.Minimize(-x @ y - cp.sum(cp.entr(y))), [cp.sum(y) == 1])

    def closed_form(x_v):
        e = np.exp(x_v - x_v.max())
        return [e / e.sum()]

    return Example(problem, [x], [y], lambda rng: [rng.uniform(-1.5, 1.5, n)], closed_form)


def sparsemax(n: int = 5) -> Example:
    """Sparsemax: the Euclidean projection onto the simplex (a QP)."""
    x, y = cp.Parameter(n), cp.Variable(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(y) == 1, y >= 0])

    def sample(rng):  # well-separated entries: the support is stable under small steps
        return [rng.permutation(np.linspace(-1.0, 1.0, n)) + rng.uniform(-0.05, 0.05, n)]

    def closed_form(x_v):
        z = np.sort(x_v)[::-1]
        cumulative = np.cumsum(z) - 1
        k = np.nonzero(z - cumulative / np.arange(1, n + 1) > 0)[0][-1]
        return [np.maximum(x_v - cumulative[k] / (k + 1), 0)]

    return Example(problem, [x], [y], sample, closed_form)


def optnet_qp(n: int = 4, m: int = 3, p: int = 1) -> Example:
    """OptNet's QP in cvxpylayers' form: ½‖L z‖² + q·z, G z ≤ h, A z = b, with L, q, G, h,
    A, b all parameters."""
    z = cp.Variable(n)
    L, q = cp.Parameter((n, n)), cp.Parameter(n)
    G, h = cp.Parameter((m, n)), cp.Parameter(m)
    A, b = cp.Parameter((p, n)), cp.Parameter(p)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L @ z) + q @ z), [G @ z <= h, A @ z == b])

    def sample(rng):
        z0 = rng.standard_normal(n)  # a feasible point with slack in every inequality
        G_v, A_v = rng.standard_normal((m, n)), rng.standard_normal((p, n))
        return [np.eye(n) + 0.3 * rng.standard_normal((n, n)), rng.standard_normal(n),
                G_v, G_v @ z0 + rng.uniform(0.1, 1.0, m), A_v, A_v @ z0]

    return Example(problem, [L, q, G, h, A, b], [z], sample)


def logistic_regression(m: int = 6, d: int = 2) -> Example:
    """The weights of ℓ2-regularised logistic regression on parametric features X (labels
    fixed), as in cvxpylayers' data-poisoning example (exp cones)."""
    w, X = cp.Variable(d), cp.Parameter((m, d))
    labels = np.arange(m) % 2
    scores = X @ w
    problem = cp.Problem(cp.Minimize(cp.sum(cp.logistic(scores) - cp.multiply(labels, scores)) / m
                                     + 0.1 * cp.sum_squares(w)))
    return Example(problem, [X], [w], lambda rng: [rng.standard_normal((m, d))])


def mpc(horizon: int = 4) -> Example:
    """A box-constrained linear-quadratic controller (cvxpylayers' control examples): the
    input sequence as a function of the initial state x0 and the dynamics' input matrix B."""
    A_dyn = np.array([[1.0, 0.1], [0.0, 1.0]])
    x0, B = cp.Parameter(2), cp.Parameter((2, 1))
    x, u = cp.Variable((2, horizon + 1)), cp.Variable((1, horizon))
    dynamics = [x[:, 0] == x0] + [x[:, t + 1] == A_dyn @ x[:, t] + B @ u[:, t]
                                  for t in range(horizon)]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x) + 0.1 * cp.sum_squares(u)),
                         dynamics + [cp.abs(u) <= 1])
    return Example(problem, [x0, B], [u],
                   lambda rng: [rng.uniform(0.8, 1.2, 2) * np.array([1.0, -1.0]),
                                np.array([[0.05], [0.1]]) + rng.uniform(0, 0.05, (2, 1))])


# ------------------------------------------------------------- one problem per other cone


def ball_projection(n: int = 3) -> Example:
    """Projection of a point outside the unit ball onto it (a second-order cone)."""
    x, y = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.norm(x, 2) <= 1])

    def sample(rng):
        v = rng.standard_normal(n)
        return [v / np.linalg.norm(v) * rng.uniform(1.5, 3.0)]

    return Example(problem, [y], [x], sample, lambda y_v: [y_v / np.linalg.norm(y_v)])


def power_cone(n: int = 3) -> Example:
    """min Σ x^1.5 − p·x over x ≤ 2, on 3-d power cones (``approx=False``): x = (p/1.5)²."""
    x, p = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.power(x, 1.5, approx=False)) - p @ x), [x <= 2])
    return Example(problem, [p], [x], lambda rng: [rng.uniform(0.4, 1.4, n)],
                   lambda p_v: [(p_v / 1.5) ** 2])


def _psd_part(Y: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((Y + Y.T) / 2)
    return (V * np.maximum(w, 0)) @ V.T


def _indefinite(rng: np.random.Generator, n: int) -> np.ndarray:
    """A symmetric matrix with eigenvalues bounded away from 0 on both sides."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = np.array([1.0, -0.8, 0.6, -1.2, 1.4][:n]) + rng.uniform(-0.1, 0.1, n)
    return (Q * w) @ Q.T


def psd_projection(n: int = 3) -> Example:
    """Nearest PSD matrix to a symmetric parameter Y, returning X and the PSD multiplier."""
    X, Y = cp.Variable((n, n), symmetric=True), cp.Parameter((n, n), symmetric=True)
    cone = X >> 0
    problem = cp.Problem(cp.Minimize(cp.sum_squares(X - Y)), [cone])

    def closed_form(Y_v):
        P = _psd_part(Y_v)
        return [P, 2 * (P - Y_v)]  # KKT: 2(X − Y) = Λ with Λ ⪰ 0

    return Example(problem, [Y], [X, cone.dual_variables[0]], lambda rng: [_indefinite(rng, n)],
                   closed_form)


def psd_projection_plain(n: int = 3) -> Example:
    """Nearest PSD matrix to a parameter P with no symmetry attribute: sym(P)'s PSD part."""
    X, P = cp.Variable((n, n), PSD=True), cp.Parameter((n, n))
    problem = cp.Problem(cp.Minimize(cp.sum_squares(X - P)))

    def sample(rng):
        return [_indefinite(rng, n) + 0.3 * (lambda S: S - S.T)(rng.standard_normal((n, n)))]

    return Example(problem, [P], [X], sample, lambda P_v: [_psd_part(P_v)])


#: every example a suite runs through both layers; the cone each exercises
CONES: dict[str, Callable[[], Example]] = {
    "lp": readme_lp, "qp": optnet_qp, "qp_relu": relu,
    "qp_relu_nonneg_variable": relu_nonneg_variable, "qp_sparsemax": sparsemax, "qp_mpc": mpc,
    "soc": ball_projection, "exp_sigmoid": sigmoid, "exp_softmax": softmax,
    "exp_logistic": logistic_regression, "pow": power_cone,
    "psd_plain": psd_projection_plain,
}


# ------------------------------------------------------------------ construction faults


def construct(module, problem, parameters, variables, **kwargs):
    """A thunk building ``module``'s CvxpyLayer (for comparing the errors both raise)."""
    return lambda: module.CvxpyLayer(problem, parameters=parameters, variables=variables,
                                     **kwargs)


def construction_faults():
    """(name, problem, parameters, variables, kwargs) that cvxpylayers refuses to build."""
    x, A, b = cp.Variable(2), cp.Parameter((3, 2)), cp.Parameter(3)
    fit = cp.Problem(cp.Minimize(cp.pnorm(A @ x - b, 1)), [x >= 0])
    c, y = cp.Parameter(pos=True), cp.Variable()
    not_dpp = cp.Problem(cp.Minimize(c * c * y), [y >= 1])
    dcp_only = cp.Problem(cp.Minimize(cp.square(y - c)))
    return [
        ("missing_parameter", fit, [A], [x], {}),
        ("extra_parameter", fit, [A, b, cp.Parameter()], [x], {}),
        ("foreign_parameter", fit, [A, cp.Parameter(3)], [x], {}),
        ("foreign_variable", fit, [A, b], [cp.Variable(2)], {}),
        ("not_dpp", not_dpp, [c], [y], {}),
        ("gp_on_non_dgp", dcp_only, [c], [y], {"gp": True}),
    ]
