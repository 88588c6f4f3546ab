"""dpplayers._lapack: Cholesky factors and solves on a stack, through scipy's Cython exports
(GIL released) or, where a scipy build's exports differ, its Python wrappers — both against
numpy's own solve, on definite and indefinite elements."""

import numpy as np
import pytest

from dpplayers import _lapack


@pytest.fixture(params=[True, False], ids=["exports", "wrappers"])
def native(request, monkeypatch):
    if request.param and not _lapack.NATIVE:
        pytest.fail("scipy's Cython LAPACK exports were not usable on this machine")
    monkeypatch.setattr(_lapack, "NATIVE", request.param)
    return request.param


def test_the_exports_are_used_here():
    assert _lapack.NATIVE  # this project's scipy: the GIL-free path is the one measured


@pytest.mark.parametrize("n", [3, 40])
def test_factors_and_solves_match_numpy(native, n):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((5, n, n))
    K = X @ X.transpose(0, 2, 1) + n * np.eye(n)
    K[2] -= 3 * n * np.eye(n)  # indefinite
    factors = K.copy()
    definite = _lapack.potrf(factors)
    assert definite.tolist() == [True, True, False, True, True]
    good = [0, 1, 3, 4]
    b = rng.standard_normal((4, n))  # one right-hand side each, against factors `good`
    x = _lapack.potrs(factors, b.copy(), np.array(good))
    np.testing.assert_allclose(x, np.linalg.solve(K[good], b[..., None])[..., 0], rtol=1e-10)
    B = rng.standard_normal((4, 3, n))  # three each, stored transposed
    X = _lapack.potrs(factors, B.copy(), np.array(good))
    np.testing.assert_allclose(X, np.linalg.solve(K[good], B.transpose(0, 2, 1))
                               .transpose(0, 2, 1), rtol=1e-10)


def test_a_wrong_layout_is_refused():
    with pytest.raises(ValueError, match="C-ordered float64"):
        _lapack.potrf(np.eye(3)[None].transpose(0, 2, 1).copy(order="F")[:, :, :2])
    with pytest.raises(ValueError, match="rows for factors of order 3"):
        _lapack.potrs(np.eye(3)[None].copy(), np.ones((1, 4)))


def _band_storage(A: np.ndarray, kl: int, ku: int) -> np.ndarray:
    """A (n, n) as LAPACK's band storage, C-ordered (n, 2 kl + ku + 1): A[i, j] at [j, kl + ku + i − j]."""
    n = A.shape[0]
    ab = np.zeros((n, 2 * kl + ku + 1))
    for j in range(n):
        for i in range(max(0, j - ku), min(n, j + kl + 1)):
            ab[j, kl + ku + i - j] = A[i, j]
    return ab


@pytest.mark.parametrize("transpose", [False, True])
def test_band_factors_solves_and_condition_match_numpy(native, transpose):
    """Band LUs of a stack (kl = 3, ku = 5, order 30; one element singular, one needing
    row interchanges) solve as numpy's dense solve does; gbcon's estimate is within a
    factor 3 below numpy's exact cond₁, and the same through the exports as the wrappers."""
    n, kl, ku = 30, 3, 5
    rng = np.random.default_rng(7)
    A = np.zeros((4, n, n))
    for k in range(4):
        for d in range(-kl, ku + 1):
            A[k] += np.diag(rng.standard_normal(n - abs(d)), d)
    A[0] += 5 * np.eye(n)
    A[1, :, 4] = 0.0  # singular
    A[2] += np.diag(np.full(n - 1, 20.0), -1)  # pivots below the diagonal
    ab = np.stack([_band_storage(a, kl, ku) for a in A])
    piv, ok = _lapack.gbtrf(ab, kl, ku)
    assert ok.tolist() == [True, False, True, True]
    b = rng.standard_normal((4, 2, n))  # two right-hand sides each, stored transposed
    x = _lapack.gbtrs(ab, piv, b.copy(), kl, ku, transpose)
    for k in (0, 2, 3):
        M = A[k].T if transpose else A[k]
        np.testing.assert_allclose(x[k].T, np.linalg.solve(M, b[k].T), rtol=1e-9, atol=1e-12)
        rcond = _lapack.gbcon(ab[k], piv[k], kl, ku, np.abs(A[k]).sum(axis=0).max())
        exact = np.linalg.cond(A[k], 1)
        assert exact / 3 <= 1 / rcond <= exact * (1 + 1e-12)
