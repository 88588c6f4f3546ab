"""Benchmark workloads: CVXPY problems with parameters, and seeded parameter values.

Every workload is feasible and bounded for every value it samples (the constraints are
built around a known interior point, the objective is strongly convex or the feasible set
is bounded). Values are drawn from ``numpy.random.default_rng(seed)`` with a seed fixed per
workload, so every library, repeat and run sees the same numbers.

A workload may have two formulations of the same problem:

- ``native``: the form dpplayers takes (OptNet's ``quad_form(z, Q)`` with a PSD parameter Q);
- ``factor``: the form cvxpylayers needs (``sum_squares(L @ z)`` with a factor parameter L,
  L = chol(Q)ᵀ, so both describe the very same QP).

Values always carry a leading batch axis (B, *shape).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

Array = npt.NDArray[np.float64]
Sampler = Callable[[np.random.Generator, int], dict[str, list[Array]]]


@dataclass(frozen=True)
class Formulation:
    """One CVXPY problem: its parameters (in the order values come) and the output x."""

    problem: cp.Problem
    parameters: tuple[cp.Parameter, ...]
    output: cp.Variable
    symmetric: tuple[bool, ...]  # per parameter: only its symmetric part matters
    gp: bool = False  # a log-log convex problem, compiled with gp=True


@dataclass(frozen=True)
class Workload:
    """A named benchmark problem with its batch sizes and a seeded value sampler."""

    name: str
    description: str
    build: Callable[[], dict[str, Formulation]]
    sampler: Sampler
    batches: tuple[int, ...]
    quick_batches: tuple[int, ...]
    seed: int
    is_qp: bool = False  # native parameters are qpth's (Q, p, G, h, A, b)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def formulations(self) -> dict[str, Formulation]:
        """The CVXPY formulations (built once)."""
        if "f" not in self._cache:
            self._cache["f"] = self.build()
        return self._cache["f"]

    def values(self, batch: int, draw: int = 0) -> dict[str, list[Array]]:
        """Parameter values per formulation, each (batch, *shape); fixed by (batch, draw)."""
        return self.sampler(np.random.default_rng((self.seed, draw)), batch)


# --- OptNet QP ------------------------------------------------------------------------------


def _optnet_qp(n: int, n_ineq: int, n_eq: int) -> Callable[[], dict[str, Formulation]]:
    def build() -> dict[str, Formulation]:
        z = cp.Variable(n, name="z")
        Q = cp.Parameter((n, n), PSD=True, name="Q")
        L = cp.Parameter((n, n), name="L")
        q, G, h = cp.Parameter(n, name="q"), cp.Parameter((n_ineq, n), name="G"), cp.Parameter(
            n_ineq, name="h")
        A, b = cp.Parameter((n_eq, n), name="A"), cp.Parameter(n_eq, name="b")
        cons = [G @ z <= h, A @ z == b]
        native = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), cons)
        factor = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L @ z) + q @ z), cons)
        sym = (True, False, False, False, False, False)
        return {
            "native": Formulation(native, (Q, q, G, h, A, b), z, sym),
            "factor": Formulation(factor, (L, q, G, h, A, b), z, (False,) * 6),
        }
    return build


def _optnet_values(n: int, n_ineq: int, n_eq: int) -> Sampler:
    def sample(rng: np.random.Generator, B: int) -> dict[str, list[Array]]:
        M = rng.standard_normal((B, n, n))
        Q = M @ M.transpose(0, 2, 1) / n + 0.1 * np.eye(n)
        L = np.linalg.cholesky(Q).transpose(0, 2, 1)  # Q = Lᵀ L
        q = rng.standard_normal((B, n))
        G = rng.standard_normal((B, n_ineq, n))
        A = rng.standard_normal((B, n_eq, n))
        z0 = rng.standard_normal((B, n))
        h = np.einsum("bij,bj->bi", G, z0) + rng.uniform(0.1, 1.0, (B, n_ineq))
        b = np.einsum("bij,bj->bi", A, z0)
        return {"native": [Q, q, G, h, A, b], "factor": [L, q, G, h, A, b]}
    return sample


# --- lasso with a box -----------------------------------------------------------------------


def _lasso_build(m: int = 100, n: int = 50) -> dict[str, Formulation]:
    x = cp.Variable(n, name="x")
    F, g = cp.Parameter((m, n), name="F"), cp.Parameter(m, name="g")
    lam = cp.Parameter(nonneg=True, name="lam")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g) + lam * cp.norm1(x)),
                      [x >= -1.0, x <= 1.0])
    return {"native": Formulation(prob, (F, g, lam), x, (False,) * 3)}


def _lasso_values(rng: np.random.Generator, B: int, m: int = 100, n: int = 50):
    F = rng.standard_normal((B, m, n)) / np.sqrt(m)
    x_true = rng.standard_normal((B, n)) * (rng.uniform(size=(B, n)) < 0.3) * 2.0
    g = np.einsum("bij,bj->bi", F, x_true) + 0.1 * rng.standard_normal((B, m))
    lam = np.full((B,), 0.1)
    return {"native": [F, g, lam]}


def _abs_box_build(m: int = 100, n: int = 50) -> dict[str, Formulation]:
    """Least squares in a box written as users often do, ``abs(x) <= 0.5``: cvxpy's t with
    |x| ≤ t ≤ 0.5 is free wherever |x| < 0.5, so J is singular there."""
    x = cp.Variable(n, name="x")
    F, g = cp.Parameter((m, n), name="F"), cp.Parameter(m, name="g")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g)), [cp.abs(x) <= 0.5])
    return {"native": Formulation(prob, (F, g), x, (False,) * 2)}


def _abs_box_values(rng: np.random.Generator, B: int):
    return {"native": _lasso_values(rng, B)["native"][:2]}


# --- sigmoid as the argmin of a binary-entropy-regularised linear objective (exp cones) -----


def _sigmoid_build(n: int = 100) -> dict[str, Formulation]:
    x, y = cp.Variable(n, name="x"), cp.Parameter(n, name="y")
    prob = cp.Problem(cp.Minimize(-y @ x - cp.sum(cp.entr(x)) - cp.sum(cp.entr(1 - x))))
    return {"native": Formulation(prob, (y,), x, (False,))}


def _sigmoid_values(rng: np.random.Generator, B: int, n: int = 100):
    return {"native": [2.0 * rng.standard_normal((B, n))]}


# --- Euclidean projection onto a second-order-cone set --------------------------------------


def _soc_build(n: int = 50, k: int = 30) -> dict[str, Formulation]:
    x = cp.Variable(n, name="x")
    y, A = cp.Parameter(n, name="y"), cp.Parameter((k, n), name="A")
    b, c, d = cp.Parameter(k, name="b"), cp.Parameter(n, name="c"), cp.Parameter(name="d")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.norm(A @ x + b, 2) <= c @ x + d])
    return {"native": Formulation(prob, (y, A, b, c, d), x, (False,) * 5)}


def _soc_values(rng: np.random.Generator, B: int, n: int = 50, k: int = 30):
    A = rng.standard_normal((B, k, n)) / np.sqrt(n)
    b = rng.standard_normal((B, k))
    c = rng.standard_normal((B, n)) / np.sqrt(n)
    x0 = rng.standard_normal((B, n))
    # x0 is strictly inside: ‖A x0 + b‖ = cᵀx0 + d − 1
    d = np.linalg.norm(np.einsum("bij,bj->bi", A, x0) + b, axis=1) - np.einsum("bj,bj->b", c, x0)
    d = d + 1.0
    y = x0 + 3.0 * rng.standard_normal((B, n))
    return {"native": [y, A, b, c, d]}


# --- nearest correlation matrix (PSD cone) --------------------------------------------------


def _ncm_build(k: int = 10) -> dict[str, Formulation]:
    X = cp.Variable((k, k), symmetric=True, name="X")
    C = cp.Parameter((k, k), name="C")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.diag(X) == 1])
    return {"native": Formulation(prob, (C,), X, (True,))}


def _ncm_values(rng: np.random.Generator, B: int, k: int = 10):
    N = rng.standard_normal((B, k, k))
    C = 0.3 * (N + N.transpose(0, 2, 1)) + np.eye(k)  # symmetric, unit-ish diagonal, indefinite
    return {"native": [C]}


# --- large sparse LP ------------------------------------------------------------------------

LP_N, LP_M, LP_DENSITY = 2000, 1000, 0.01


def _lp_matrix() -> tuple[sp.csc_array, Array]:
    """A fixed sparse A (m × n, ~1% random entries) and a basis S of m columns.

    A = R + D: R sparse random, D puts ±3 at (i, S_i), so the basis matrix A_S is
    well-conditioned and an instance built on S has a unique, non-degenerate solution.
    """
    rng = np.random.default_rng(1234)
    R = sp.random_array((LP_M, LP_N), density=LP_DENSITY, format="csc", rng=rng,
                        data_sampler=rng.standard_normal)
    S = rng.permutation(LP_N)[:LP_M]
    D = sp.csc_array((3.0 * rng.choice([-1.0, 1.0], LP_M), (np.arange(LP_M), S)),
                     shape=(LP_M, LP_N))
    return (R + D).tocsc(), S


def _lp_build() -> dict[str, Formulation]:
    x = cp.Variable(LP_N, name="x")
    c, b = cp.Parameter(LP_N, name="c"), cp.Parameter(LP_M, name="b")
    prob = cp.Problem(cp.Minimize(c @ x), [_lp_matrix()[0] @ x == b, x >= 0])
    return {"native": Formulation(prob, (c, b), x, (False, False))}


def _lp_values(rng: np.random.Generator, B: int):
    """b = A x0 with x0 > 0 on S; c = Aᵀy0 + s0 with s0 > 0 off S: x0 is the unique optimum."""
    A, S = _lp_matrix()
    x0 = np.zeros((B, LP_N))
    x0[:, S] = rng.uniform(0.5, 1.5, (B, LP_M))
    s0 = rng.uniform(0.1, 1.0, (B, LP_N))
    s0[:, S] = 0.0
    b = (A @ x0.T).T
    c = (A.T @ rng.standard_normal((LP_M, B))).T + s0
    return {"native": [c, b]}


# --- the wider corpus (issue #21): structures cvxpy canonicalises differently ---------------


def _ncm_norm_build(k: int = 10) -> dict[str, Formulation]:
    """The nearest correlation matrix with a norm objective: an SOC of dimension k² + 1
    beside the PSD cone (sum_squares gives a quadratic objective instead)."""
    X = cp.Variable((k, k), symmetric=True, name="X")
    C = cp.Parameter((k, k), name="C")
    prob = cp.Problem(cp.Minimize(cp.norm(X - C, "fro")), [X >> 0, cp.diag(X) == 1])
    return {"native": Formulation(prob, (C,), X, (True,))}


def _lsq_norm_build(m: int = 200, n: int = 50) -> dict[str, Formulation]:
    """‖F x − g‖₂ + λ‖x‖₁: one SOC of dimension m + 1 (the norm, not its square)."""
    x = cp.Variable(n, name="x")
    F, g = cp.Parameter((m, n), name="F"), cp.Parameter(m, name="g")
    lam = cp.Parameter(nonneg=True, name="lam")
    prob = cp.Problem(cp.Minimize(cp.norm(F @ x - g, 2) + lam * cp.norm1(x)))
    return {"native": Formulation(prob, (F, g, lam), x, (False,) * 3)}


def _lsq_norm_values(rng: np.random.Generator, B: int, m: int = 200, n: int = 50):
    F = rng.standard_normal((B, m, n)) / np.sqrt(m)
    x_true = rng.standard_normal((B, n)) * (rng.uniform(size=(B, n)) < 0.3)
    g = np.einsum("bij,bj->bi", F, x_true) + 0.1 * rng.standard_normal((B, m))
    return {"native": [F, g, np.full((B,), 0.05)]}


def _psd_proj_build(k: int = 30) -> dict[str, Formulation]:
    """Projection onto {X ⪰ 0, tr X = 1} (a spectraplex) of a symmetric C: one PSD block
    of order k."""
    X = cp.Variable((k, k), symmetric=True, name="X")
    C = cp.Parameter((k, k), name="C")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.trace(X) == 1])
    return {"native": Formulation(prob, (C,), X, (True,))}


def _psd_values(k: int) -> Sampler:
    def sample(rng: np.random.Generator, B: int) -> dict[str, list[Array]]:
        N = rng.standard_normal((B, k, k)) / np.sqrt(k)
        return {"native": [0.5 * (N + N.transpose(0, 2, 1))]}
    return sample


def _logistic_build(m: int = 100, n: int = 10) -> dict[str, Formulation]:
    """L2-regularised logistic regression on parameter data Z = diag(y) X (the labels
    folded in, as DPP requires): m exponential-cone pairs."""
    w = cp.Variable(n, name="w")
    Z = cp.Parameter((m, n), name="Z")
    prob = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-Z @ w)) / m + 0.05 * cp.sum_squares(w)))
    return {"native": Formulation(prob, (Z,), w, (False,))}


def _logistic_values(rng: np.random.Generator, B: int, m: int = 100, n: int = 10):
    X = rng.standard_normal((B, m, n))
    truth = rng.standard_normal((B, n))
    flip = rng.uniform(size=(B, m)) < 0.1
    y = np.sign(np.einsum("bij,bj->bi", X, truth)) * np.where(flip, -1.0, 1.0)
    return {"native": [y[:, :, None] * X]}


def _pnorm_build(m: int = 50, n: int = 20) -> dict[str, Formulation]:
    """A cubic-loss fit Σ|F x − g|³ + ½‖x‖², each |r_i|³ ≤ t_i written as a power cone
    (t_i, 1, r_i) with α = 1/3 (cvxpy writes pnorm with second-order cones instead)."""
    x, t = cp.Variable(n, name="x"), cp.Variable(m, name="t")
    F, g = cp.Parameter((m, n), name="F"), cp.Parameter(m, name="g")
    cone = cp.constraints.PowCone3D(t, np.ones(m), F @ x - g, 1.0 / 3.0)
    prob = cp.Problem(cp.Minimize(cp.sum(t) + 0.5 * cp.sum_squares(x)), [cone])
    return {"native": Formulation(prob, (F, g), x, (False, False))}


def _pnorm_values(rng: np.random.Generator, B: int, m: int = 50, n: int = 20):
    return {"native": [rng.standard_normal((B, m, n)) / np.sqrt(m),
                       rng.standard_normal((B, m))]}


def _lp_inactive_build(n: int = 20, m: int = 200) -> dict[str, Formulation]:
    """An LP over a polytope of m random halfspaces around the origin, inside a box: at
    the optimal vertex all but ~n of the m inequalities are inactive."""
    x = cp.Variable(n, name="x")
    c, G, h = cp.Parameter(n, name="c"), cp.Parameter((m, n), name="G"), cp.Parameter(m, name="h")
    prob = cp.Problem(cp.Minimize(c @ x), [G @ x <= h, x <= 10, x >= -10])
    return {"native": Formulation(prob, (c, G, h), x, (False,) * 3)}


def _lp_inactive_values(rng: np.random.Generator, B: int, n: int = 20, m: int = 200):
    return {"native": [rng.standard_normal((B, n)), rng.standard_normal((B, m, n)),
                       rng.uniform(1.0, 2.0, (B, m))]}


def _eq_lsq_build(n: int = 50, m: int = 20) -> dict[str, Formulation]:
    """min ‖x − y‖² s.t. A x = b: equality constraints only."""
    x = cp.Variable(n, name="x")
    y, A, b = cp.Parameter(n, name="y"), cp.Parameter((m, n), name="A"), cp.Parameter(m, name="b")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [A @ x == b])
    return {"native": Formulation(prob, (y, A, b), x, (False,) * 3)}


def _eq_lsq_values(rng: np.random.Generator, B: int, n: int = 50, m: int = 20):
    return {"native": [rng.standard_normal((B, n)), rng.standard_normal((B, m, n)),
                       rng.standard_normal((B, m))]}


def _gp_build() -> dict[str, Formulation]:
    """Box design (a GP, gp=True): maximise volume h·w·d under wall and floor areas and
    aspect-ratio bounds, all parameters."""
    h, w, d = (cp.Variable(pos=True, name=v) for v in "hwd")
    A_wall, A_flr = cp.Parameter(pos=True, name="A_wall"), cp.Parameter(pos=True, name="A_flr")
    alpha, beta = cp.Parameter(pos=True, name="alpha"), cp.Parameter(pos=True, name="beta")
    prob = cp.Problem(cp.Maximize(h * w * d), [2 * (h * w + h * d) <= A_wall, w * d <= A_flr,
                                               alpha <= h / w, h / w <= beta])
    return {"native": Formulation(prob, (A_wall, A_flr, alpha, beta), h, (False,) * 4,
                                  gp=True)}


def _gp_values(rng: np.random.Generator, B: int):
    return {"native": [rng.uniform(80, 120, B), rng.uniform(8, 12, B),
                       rng.uniform(0.4, 0.6, B), rng.uniform(1.8, 2.2, B)]}


def _mpc_build(T: int = 20, nx: int = 4, nu: int = 2) -> dict[str, Formulation]:
    """Linear MPC, horizon 20: x_{t+1} = A x_t + B u_t from a parameter x0, |u| ≤ 1,
    quadratic state and input costs; returns the first input's trajectory (all of u)."""
    x, u = cp.Variable((nx, T + 1), name="x"), cp.Variable((nu, T), name="u")
    x0 = cp.Parameter(nx, name="x0")
    A, B = cp.Parameter((nx, nx), name="A"), cp.Parameter((nx, nu), name="B")
    cons = [x[:, 0] == x0, x[:, 1:] == A @ x[:, :-1] + B @ u, u <= 1, u >= -1]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x) + 0.1 * cp.sum_squares(u)), cons)
    return {"native": Formulation(prob, (x0, A, B), u, (False,) * 3)}


def _mpc_values(rng: np.random.Generator, B: int, nx: int = 4, nu: int = 2):
    A = np.eye(nx) + 0.1 * rng.standard_normal((B, nx, nx))
    return {"native": [3.0 * rng.standard_normal((B, nx)), A,
                       rng.standard_normal((B, nx, nu))]}


def _sparsemax_build(n: int = 100) -> dict[str, Formulation]:
    """sparsemax: the Euclidean projection onto the probability simplex."""
    x, y = cp.Variable(n, name="x"), cp.Parameter(n, name="y")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0])
    return {"native": Formulation(prob, (y,), x, (False,))}


def _sparsemax_values(rng: np.random.Generator, B: int, n: int = 100):
    return {"native": [rng.standard_normal((B, n))]}


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    Workload("qp50", "OptNet QP: n=50, 25 inequalities, 10 equalities; Q (or L), q, G, h, A, b",
             _optnet_qp(50, 25, 10), _optnet_values(50, 25, 10), (1, 8, 32, 128), (1, 8),
             seed=0, is_qp=True),
    Workload("qp200", "OptNet QP: n=200, 100 inequalities, 50 equalities; all parameters",
             _optnet_qp(200, 100, 50), _optnet_values(200, 100, 50), (1, 32, 128), (1,),
             seed=1, is_qp=True),
    Workload("lasso", "lasso with box |x| <= 1: F 100x50, g, lambda", _lasso_build,
             _lasso_values, (1, 8, 32, 128), (1, 8), seed=2),
    Workload("sigmoid", "sigmoid via binary entropy, n=100 (200 exp cones); y", _sigmoid_build,
             _sigmoid_values, (1, 8, 32, 128), (1, 8), seed=3),
    Workload("soc_proj", "projection onto {x: ||Ax+b|| <= c'x+d}, x in R^50, A 30x50",
             _soc_build, _soc_values, (1, 8, 32, 128), (1, 8), seed=4),
    Workload("ncm", "nearest correlation matrix 10x10 (PSD cone); C", _ncm_build, _ncm_values,
             (1, 8, 32), (1,), seed=5),
    Workload("sparse_lp", f"sparse standard-form LP: {LP_N} variables, {LP_M} equality rows, "
             f"A ~{LP_DENSITY:.0%} dense (constant), x >= 0; c, b", _lp_build, _lp_values,
             (1,), (1,), seed=6),
    Workload("ncm_norm", "nearest correlation matrix 10x10 with a norm objective (SOC 101 + "
             "PSD); C", _ncm_norm_build, _ncm_values, (1, 8, 32), (1,), seed=7),
    Workload("lsq_norm", "||F x - g||_2 + lambda ||x||_1, F 200x50 (SOC 201); F, g, lambda",
             _lsq_norm_build, _lsq_norm_values, (1, 8, 32, 128), (1,), seed=8),
    Workload("psd_proj", "projection onto the spectraplex, 20x20 (PSD 20); C",
             lambda: _psd_proj_build(20), _psd_values(20), (1, 8, 32), (1,), seed=9),
    Workload("logistic", "L2 logistic regression, data 100x10 (200 exp cones); Z = diag(y) X",
             _logistic_build, _logistic_values, (1, 8, 32, 128), (1,), seed=10),
    Workload("pnorm", "cubic-loss fit sum |F x - g|^3 + 0.5||x||^2, F 50x20 (50 power cones); "
             "F, g",
             _pnorm_build, _pnorm_values, (1, 8, 32, 128), (1,), seed=11),
    Workload("lp_inactive", "LP, 20 variables, 200 halfspaces (most inactive) and a box; c, G, h",
             _lp_inactive_build, _lp_inactive_values, (1, 8, 32, 128), (1,), seed=12),
    Workload("eq_lsq", "min ||x - y||^2 s.t. A x = b, A 20x50 (equalities only); y, A, b",
             _eq_lsq_build, _eq_lsq_values, (1, 8, 32, 128), (1,), seed=13),
    Workload("gp_box", "box design GP (gp=True): max volume under area and aspect limits",
             _gp_build, _gp_values, (1, 8, 32, 128), (1,), seed=14),
    Workload("mpc20", "linear MPC, horizon 20, 4 states, 2 inputs, |u| <= 1; x0, A, B",
             _mpc_build, _mpc_values, (1, 8, 32, 128), (1,), seed=15),
    Workload("sparsemax", "sparsemax: projection of y onto the simplex, n=100; y",
             _sparsemax_build, _sparsemax_values, (1, 8, 32, 128), (1,), seed=16),
    Workload("abs_box", "least squares in a box written abs(x) <= 0.5 (free auxiliaries), "
             "F 100x50; F, g", _abs_box_build, _abs_box_values, (1, 8, 32, 128), (1,), seed=17),
]}
