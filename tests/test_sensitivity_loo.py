"""Exact leave-one-out by chord iterations (dpplayers.sensitivity._loo) against refits we did
not write: scikit-learn's logistic regression, and the refits' certificate: a refit is
returned from the chord iterations only when its own KKT residual is at tolerance, and
every other refit is solved by the conic solver (forced here by allowing one iteration).

Every program is compiled with parameter values unset and checked at two weight vectors.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import weighted_logistic

import dpplayers
from dpplayers.sensitivity import _loo, influence

linear_model = pytest.importorskip("sklearn.linear_model")


def _logistic(n: int, d: int, seed: int):
    return weighted_logistic(n, d, seed)


def _sklearn_refits(X, y, weights, points):
    fits = []
    for i in points:
        keep = weights.copy()
        keep[i] = 0.0
        model = linear_model.LogisticRegression(C=1.0, fit_intercept=False, tol=1e-12,
                                                max_iter=10_000)
        fits.append(model.fit(X, y, sample_weight=keep).coef_[0])
    return np.array(fits)


@pytest.mark.parametrize("n", [60, 300])  # J of order 610 (LU) and 3,010 (bordered LU)
def test_chord_refits_match_sklearn(n):
    problem, w, beta, X, y = _logistic(n, 10, n)
    prog = dpplayers.compile(problem, parameters=[w], variables=[beta])
    rng = np.random.default_rng(1)
    for weights in (np.ones(n), rng.uniform(0.5, 2.0, n)):
        inf = influence(prog, weights=w, coefficients=[beta], values=[weights], exact=True,
                        flag=False)
        methods = {i["method"] for i in inf.loo_solution.info}
        assert methods == {"chord"}
        assert max(i["residual"] for i in inf.loo_solution.info) <= _loo.TOL
        points = np.arange(0, n, max(n // 15, 1))
        want = _sklearn_refits(X, y, weights, points)
        np.testing.assert_allclose(inf.coefficients + inf.exact_change[points], want,
                                   rtol=0, atol=1e-6)


def test_unconverged_refits_are_solved_not_returned(monkeypatch):
    """With one chord iteration allowed, most refits do not reach the tolerance: they are
    solved by the conic solver (method "solve"), and every refit still matches sklearn."""
    n = 40
    problem, w, beta, X, y = _logistic(n, 4, 3)
    prog = dpplayers.compile(problem, parameters=[w], variables=[beta])
    monkeypatch.setattr(_loo, "MAX_ITERATIONS", 1)
    weights = np.ones(n)
    inf = influence(prog, weights=w, coefficients=[beta], values=[weights], exact=True,
                    flag=False)
    info = inf.loo_solution.info
    solved = [i for i, d in enumerate(info) if d["method"] == "solve"]
    assert len(solved) > n // 2
    assert all(d["residual"] <= _loo.TOL for d in info if d["method"] == "chord")
    want = _sklearn_refits(X, y, weights, np.arange(n))
    np.testing.assert_allclose(inf.coefficients + inf.exact_change, want, rtol=0, atol=1e-6)


def test_refit_solve_agrees_and_bad_refit_is_named():
    n = 30
    problem, w, beta, _, _ = _logistic(n, 3, 5)
    prog = dpplayers.compile(problem, parameters=[w], variables=[beta])
    values = [np.ones(n)]
    chord = influence(prog, weights=w, coefficients=[beta], values=values, exact=True, flag=False)
    solve = influence(prog, weights=w, coefficients=[beta], values=values, exact=True,
                      flag=False, refit="solve")
    assert isinstance(solve.loo_solution, dpplayers.Solution)
    np.testing.assert_allclose(chord.exact_change, solve.exact_change, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="refit must be one of"):
        influence(prog, weights=w, coefficients=[beta], values=values, exact=True,
                  refit="newton")
