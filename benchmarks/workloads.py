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
]}
