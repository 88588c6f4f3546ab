"""The problem zoo shared by every test: one registered builder per problem.

Each case builds a fresh cvxpy problem with parameters, the variables to return, and a
sampler of parameter values that keeps the problem feasible and bounded. Families: lp,
qp, socp, sdp, exp, pow, dual, sym, gp. ``smooth=False`` marks cases whose solution map
is not differentiable at generic samples (they are skipped by derivative checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

Sampler = Callable[[np.random.Generator], list[np.ndarray]]


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    problem: cp.Problem
    parameters: tuple[cp.Parameter, ...]
    variables: tuple[cp.Variable, ...]
    sample: Sampler
    gp: bool = False
    smooth: bool = True
    tags: tuple[str, ...] = field(default=())


CASES: dict[str, Callable[[], Case]] = {}


def case(family: str, smooth: bool = True, gp: bool = False, tags: tuple[str, ...] = ()):
    """Register a builder ``() -> (problem, parameters, variables, sampler)``."""

    def register(builder):
        name = builder.__name__

        def build() -> Case:
            problem, params, variables, sample = builder()
            return Case(name, family, problem, tuple(params), tuple(variables), sample, gp,
                        smooth, tags)

        CASES[name] = build
        return builder

    return register


def names(*families: str, smooth_only: bool = False) -> list[str]:
    """Registered case names, optionally of some families / smooth ones only."""
    out = []
    for name, build in CASES.items():
        c = build()
        if families and c.family not in families:
            continue
        if smooth_only and not c.smooth:
            continue
        out.append(name)
    return out


def sym(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return (a + a.T) / 2


# ---------------------------------------------------------------------------- LP


@case("lp")
def lp_box():
    n, m = 5, 3
    c, A, b = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(c @ x + 0.0), [A @ x <= b, x >= -1, x <= 1])

    def sample(rng):
        Av = rng.standard_normal((m, n))
        return [rng.standard_normal(n), Av, Av @ rng.uniform(-0.5, 0.5, n) + rng.uniform(0.1, 1, m)]

    return prob, [c, A, b], [x], sample


@case("lp")
def lp_simplex():
    n = 6
    c = cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(c @ x), [x >= 0, cp.sum(x) == 1])
    return prob, [c], [x], lambda rng: [rng.standard_normal(n)]


@case("lp")
def lp_equality_form():
    m, n = 3, 6
    A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n, nonneg=True)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(c @ x), [A @ x == b, x >= 0])

    def sample(rng):
        Av = rng.standard_normal((m, n))
        return [Av, Av @ rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 2, n)]

    return prob, [A, b, c], [x], sample


# ---------------------------------------------------------------------------- QP


@case("qp")
def qp_nonneg_least_squares():
    m, n = 8, 4
    F, g = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g)), [x >= 0])
    return prob, [F, g], [x], lambda rng: [rng.standard_normal((m, n)), rng.standard_normal(m)]


@case("qp")
def qp_quad_form_constant():
    n, p = 4, 3
    rng0 = np.random.default_rng(42)
    L = rng0.standard_normal((n, n))
    Q = L @ L.T + np.eye(n)
    q, G, h = cp.Parameter(n), cp.Parameter((p, n)), cp.Parameter(p)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x), [G @ x <= h])
    return prob, [q, G, h], [x], lambda rng: [
        rng.standard_normal(n), rng.standard_normal((p, n)), rng.uniform(0.1, 1, p)]


@case("qp")
def qp_box_projection():
    n = 5
    y = cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [x >= -1, x <= 1])
    return prob, [y], [x], lambda rng: [2 * rng.standard_normal(n)]


@case("qp")
def qp_ridge():
    m, n = 7, 4
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + 0.5 * cp.sum_squares(x)))
    return prob, [A, b], [x], lambda rng: [rng.standard_normal((m, n)), rng.standard_normal(m)]


@case("qp")
def qp_maximize():
    n = 4
    a, b = cp.Parameter(n), cp.Parameter(n)
    x = cp.Variable(n)
    con = cp.sum(x) == 1
    prob = cp.Problem(cp.Maximize(-cp.sum_squares(x - a) + b @ x), [con])
    return prob, [a, b], [x, con.dual_variables[0]], lambda rng: [
        rng.standard_normal(n), rng.standard_normal(n)]


# ---------------------------------------------------------------------------- SOCP


@case("socp")
def socp_norm_residual():
    m, n = 6, 3
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.norm(A @ x - b, 2) + 0.1 * cp.sum_squares(x)),
                      [x <= 1, x >= -1])
    return prob, [A, b], [x], lambda rng: [rng.standard_normal((m, n)), rng.standard_normal(m)]


@case("socp")
def socp_ball_linear():
    n = 4
    c, x0 = cp.Parameter(n), cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(c @ x), [cp.norm(x - x0, 2) <= 1.5])
    return prob, [c, x0], [x], lambda rng: [rng.standard_normal(n), rng.standard_normal(n)]


@case("socp")
def socp_sum_of_norms():
    k, d = 3, 2
    P = cp.Parameter((k, d))
    X = cp.Variable((k, d))
    prob = cp.Problem(cp.Minimize(cp.sum(cp.norm(X - P, 2, axis=1)) + cp.sum_squares(X)))
    return prob, [P], [X], lambda rng: [3 * rng.standard_normal((k, d))]


# ---------------------------------------------------------------------------- SDP


@case("sdp")
def sdp_lambda_max():
    n = 3
    C = cp.Parameter((n, n), symmetric=True)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.lambda_max(C + cp.diag(x)) + cp.sum_squares(x)))
    return prob, [C], [x], lambda rng: [sym(rng, n)]


@case("sdp")
def sdp_psd_variable():
    n = 3
    C = cp.Parameter((n, n), symmetric=True)
    X = cp.Variable((n, n), PSD=True)
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X) + cp.sum_squares(X)), [cp.trace(X) == 1])
    return prob, [C], [X], lambda rng: [sym(rng, n)]


@case("sdp")
def sdp_nearest_correlation():
    n = 3
    C = cp.Parameter((n, n))
    X = cp.Variable((n, n), symmetric=True)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.diag(X) == 1])
    return prob, [C], [X], lambda rng: [sym(rng, n) + np.eye(n)]


# ---------------------------------------------------------------------------- exponential


@case("exp")
def exp_softmax():
    n = 5
    z = cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Maximize(z @ x + cp.sum(cp.entr(x))), [cp.sum(x) == 1])
    return prob, [z], [x], lambda rng: [rng.standard_normal(n)]


@case("exp")
def exp_log_barrier():
    m, n = 6, 3
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Maximize(cp.sum(cp.log(b - A @ x)) - cp.sum_squares(x)))
    return prob, [A, b], [x], lambda rng: [rng.standard_normal((m, n)), rng.uniform(1, 2, m)]


@case("exp")
def exp_sum_exp():
    n = 4
    c = cp.Parameter(n, pos=True)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum(cp.exp(x)) - c @ x))
    return prob, [c], [x], lambda rng: [rng.uniform(0.5, 2, n)]


@case("exp")
def exp_log_sum_exp():
    m, n = 5, 3
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.log_sum_exp(A @ x + b) + cp.sum_squares(x)))
    return prob, [A, b], [x], lambda rng: [rng.standard_normal((m, n)), rng.standard_normal(m)]


@case("exp")
def exp_kl_div():
    n = 4
    y = cp.Parameter(n, pos=True)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum(cp.kl_div(x, y))), [cp.sum(x) == 1])
    return prob, [y], [x], lambda rng: [rng.uniform(0.2, 1, n)]


@case("exp")
def exp_sigmoid():
    n = 4
    z = cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Maximize(z @ x + cp.sum(cp.entr(x) + cp.entr(1 - x))))
    return prob, [z], [x], lambda rng: [rng.standard_normal(n)]


# ---------------------------------------------------------------------------- power


@case("pow")
def pow_pnorm3():
    m, n = 5, 3
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.pnorm(A @ x - b, 3) + cp.sum_squares(x)))
    return prob, [A, b], [x], lambda rng: [rng.standard_normal((m, n)), rng.standard_normal(m)]


@case("pow")
def pow_geo_mean():
    n = 3
    c = cp.Parameter(n, pos=True)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Maximize(cp.geo_mean(x) - 0.1 * cp.sum_squares(x)), [c @ x <= 1, x >= 0])
    return prob, [c], [x], lambda rng: [rng.uniform(0.5, 2, n)]


@case("pow")
def pow_power_1_5():
    n = 4
    c = cp.Parameter(n, pos=True)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum(cp.power(x, 1.5)) - c @ x), [x >= 0])
    return prob, [c], [x], lambda rng: [rng.uniform(0.5, 2, n)]


# ---------------------------------------------------------------------------- duals


@case("dual")
def dual_equality_inequality():
    n, m, p = 4, 1, 3
    q, A, b, G, h = (cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m),
                     cp.Parameter((p, n)), cp.Parameter(p))
    x = cp.Variable(n)
    eq, ineq = A @ x == b, G @ x <= h
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [eq, ineq])

    def sample(rng):
        Gv, x0 = rng.standard_normal((p, n)), rng.standard_normal(n)
        Av = rng.standard_normal((m, n))
        return [5 * rng.standard_normal(n), Av, Av @ x0, Gv, Gv @ x0 + rng.uniform(0.01, 0.2, p)]

    return prob, [q, A, b, G, h], [x, eq.dual_variables[0], ineq.dual_variables[0]], sample


@case("dual")
def dual_soc():
    n = 3
    c = cp.Parameter(n)
    x, t = cp.Variable(n), cp.Variable()
    soc = cp.SOC(t, x)
    prob = cp.Problem(cp.Minimize(c @ x + 2 * t + 0.1 * cp.sum_squares(x)), [soc, t <= 2])
    return prob, [c], [x, soc.dual_variables[0], soc.dual_variables[1]], lambda rng: [
        3 * rng.standard_normal(n)]


@case("dual")
def dual_psd():
    n = 3
    C = cp.Parameter((n, n), symmetric=True)
    X = cp.Variable((n, n), symmetric=True)
    psd = X >> 0
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X) + 0.5 * cp.sum_squares(X)), [psd])
    return prob, [C], [X, psd.dual_variables[0]], lambda rng: [sym(rng, n)]


@case("dual")
def dual_exp_cone():
    a = cp.Parameter(pos=True)
    x, y, z = cp.Variable(), cp.Variable(), cp.Variable()
    ec = cp.constraints.ExpCone(x, y, z)
    prob = cp.Problem(cp.Minimize(z - a * x + cp.square(y - 1) + cp.square(x)), [ec])
    return prob, [a], [x, y, z, ec.dual_variables[0], ec.dual_variables[2]], lambda rng: [
        np.array(rng.uniform(0.5, 2))]


# ---------------------------------------------------------------------------- GP


@case("gp", gp=True)
def gp_box_volume():
    a, b = cp.Parameter(pos=True), cp.Parameter(pos=True)
    x, y, z = cp.Variable(pos=True), cp.Variable(pos=True), cp.Variable(pos=True)
    prob = cp.Problem(cp.Minimize(1 / (x * y * z)),
                      [a * (x * y + x * z + y * z) <= b, x >= 0.5 * y, x <= 2 * y])
    return prob, [a, b], [x, y, z], lambda rng: [np.array(rng.uniform(1, 2)),
                                                 np.array(rng.uniform(2, 4))]


@case("qp", tags=("optnet",))
def qp_optnet():
    """The OptNet layer: quad_form(z, Q) with a PSD parameter Q, every datum a parameter."""
    n, m, p = 5, 2, 4
    Q = cp.Parameter((n, n), PSD=True)
    q, A, b, G, h = (cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m),
                     cp.Parameter((p, n)), cp.Parameter(p))
    z = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [A @ z == b, G @ z <= h])

    def sample(rng):
        L, Av, Gv, z0 = (rng.standard_normal((n, n)), rng.standard_normal((m, n)),
                         rng.standard_normal((p, n)), rng.standard_normal(n))
        return [L @ L.T + np.eye(n), rng.standard_normal(n), Av, Av @ z0, Gv,
                Gv @ z0 + rng.uniform(0.1, 1.0, p)]

    return prob, [Q, q, A, b, G, h], [z], sample


def weighted_logistic(n: int, d: int, seed: int):
    """An L2-regularised logistic regression on n random points with per-point weights w:
    (problem, w, beta, X, y)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.where(X @ rng.normal(size=d) + 0.5 * rng.normal(size=n) > 0, 1.0, -1.0)
    w = cp.Parameter(n, nonneg=True, name="w")
    beta = cp.Variable(d, name="beta")
    problem = cp.Problem(cp.Minimize(w @ cp.logistic(-cp.multiply(y, X @ beta))
                                     + 0.5 * cp.sum_squares(beta)))
    return problem, w, beta, X, y
