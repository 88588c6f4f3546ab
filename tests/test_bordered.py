"""The bordered LU (a few dense rows and columns around a sparse rest): solves against
SciPy's sparse solver, its refusals, and a fitted model's derivative through it against
finite differences of CVXPY's re-solves at two parameter points."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from helpers import weighted_logistic

import dpplayers
from dpplayers._derivative import bordered
from dpplayers._derivative.bordered import BorderedFactor
from dpplayers._derivative.plan import DENSE_MAX_ORDER


def _arrow(n: int, k: int, seed: int) -> sp.csc_matrix:
    """A sparse block-diagonal rest (3×3 blocks) with k dense rows and columns, shuffled."""
    rng = np.random.default_rng(seed)
    blocks = [rng.normal(size=(3, 3)) + 4 * np.eye(3) for _ in range(n // 3)]
    rest = sp.block_diag(blocks, format="csc")
    N = rest.shape[0] + k
    M = sp.lil_matrix((N, N))
    M[: rest.shape[0], : rest.shape[0]] = rest
    M[rest.shape[0]:, : rest.shape[0]] = rng.normal(size=(k, rest.shape[0]))
    M[: rest.shape[0], rest.shape[0]:] = rng.normal(size=(rest.shape[0], k))
    M[rest.shape[0]:, rest.shape[0]:] = rng.normal(size=(k, k)) + 50 * np.eye(k)
    perm = rng.permutation(N)
    return sp.csc_matrix(sp.csc_matrix(M)[perm][:, perm])


@pytest.mark.parametrize("seed", [0, 1])
def test_solves_match_scipy(seed):
    M = _arrow(2400, 15, seed)
    factor = BorderedFactor.of(M, DENSE_MAX_ORDER)
    assert factor is not None and factor.dense.size == 15
    r = np.random.default_rng(seed + 10).normal(size=(M.shape[0], 3))
    for trans, matrix in (("N", M), ("T", M.T.tocsc())):
        z = factor.solve(r, trans=trans)
        want = spla.spsolve(matrix, r)
        np.testing.assert_allclose(z, want, rtol=1e-9, atol=1e-11)
        assert np.abs(matrix @ z - r).max() <= 1e-10 * np.abs(r).max()
        np.testing.assert_allclose(factor.solve(r[:, 0], trans=trans), z[:, 0], rtol=1e-12,
                                   atol=1e-14)  # one right-hand side as a vector


def test_refusals():
    small = _arrow(300, 5, 0)  # below the order where dense LUs stop
    assert BorderedFactor.of(small, DENSE_MAX_ORDER) is None
    banded = sp.diags([np.ones(3000), 4 * np.ones(3001), np.ones(3000)], [-1, 0, 1], format="csc")
    assert BorderedFactor.of(banded, DENSE_MAX_ORDER) is None  # no dense row or column
    M = _arrow(2400, 15, 0).tolil()
    rest = np.setdiff1d(np.arange(M.shape[0]), bordered.border(M.tocsc(), DENSE_MAX_ORDER))
    M[rest[0], rest] = 0.0  # a row of the rest that meets only the border: A singular
    M[rest, rest[0]] = 0.0
    assert BorderedFactor.of(M.tocsc(), DENSE_MAX_ORDER) is None


def _logistic(n: int, d: int, seed: int):
    return weighted_logistic(n, d, seed)[:3]


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_influence_through_a_bordered_lu_matches_finite_differences(solver, monkeypatch):
    """Logistic regression on 300 points (J of order 3,010 with 10 dense rows and columns):
    ∂β/∂wᵢ against central differences of CVXPY's re-solves, at two weight vectors. The
    rest is a narrow band, so the band LU with that border solves it
    (:mod:`dpplayers._derivative.banded`); an element it declines would get this module's
    bordered SuperLU."""
    problem, w, beta = _logistic(300, 10, 0)
    used = []
    original = BorderedFactor.__init__

    def spy(self, M, dense):
        used.append(dense.size)
        original(self, M, dense)

    monkeypatch.setattr(BorderedFactor, "__init__", spy)
    prog = dpplayers.compile(problem, parameters=[w], variables=[beta], solver=solver)
    rng = np.random.default_rng(1)
    for weights in (np.ones(300), rng.uniform(0.5, 2.0, 300)):
        sol = prog.solve(weights, solver_args={"eps": 1e-10})
        D = sol.sensitivity(of=beta, wrt=w).block("beta", "w")  # (10, 300)
        layout = prog.kkt_pattern.band
        assert layout is not None and layout.border == 10
        assert not sol._derivative.factors or (used and used[-1] == 10)
        for i in (0, 7, 123):
            out = []
            for h in (1e-4, -1e-4):
                value = weights.copy()
                value[i] += h
                w.value = value
                problem.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                              tol_feas=1e-12)
                out.append(beta.value.copy())
            fd = (out[0] - out[1]) / 2e-4
            np.testing.assert_allclose(D[:, i], fd, rtol=1e-4, atol=1e-7)
