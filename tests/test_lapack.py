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
