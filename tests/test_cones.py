"""Tests of dpplayers.cones, organised by property.

Oracles are independent of the module: cvxpy + Clarabel solving min ||p - v||^2 over the cone,
membership tests written from the cone definitions, an explicit eigendecomposition for PSD,
central finite differences, and diffcp (its C++ projections and derivatives) where it has the
cone. Cone layouts come from one registry, `KINDS`, so every property runs on every cone kind.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

from dpplayers.cones import (
    ConeDims,
    DualExponentialCone,
    ExponentialCone,
    PowerCone,
    ProductCone,
    psd_svec_permutation,
    scs_to_clarabel_permutation,
    smat,
    svec,
)

SQRT2 = np.sqrt(2.0)


# ------------------------------------------------------------------ independent references

def ref_svec(X: np.ndarray) -> np.ndarray:
    """Lower triangle column by column, off-diagonals times sqrt(2), written as loops."""
    n = X.shape[0]
    return np.array([X[i, j] * (1.0 if i == j else SQRT2) for j in range(n) for i in range(j, n)])


def ref_svec_upper(X: np.ndarray) -> np.ndarray:
    """Clarabel's layout: upper triangle column by column, same scaling."""
    n = X.shape[0]
    return np.array([X[i, j] * (1.0 if i == j else SQRT2) for j in range(n) for i in range(j + 1)])


def random_symmetric(rng: np.random.Generator, n: int) -> np.ndarray:
    A = rng.standard_normal((n, n))
    return (A + A.T) / 2


@dataclass(frozen=True)
class Kind:
    """One cone kind as the tests see it: a cvxpy constraint, a sampler, a membership test."""

    constraint: Callable[[cp.Expression, float], list]
    sample: Callable[[np.random.Generator, int, float], np.ndarray]  # a point inside
    member: Callable[[np.ndarray, float, float], bool]


# Exponential and power cones: the defining inequalities are steep near the boundary, so "within
# tol" is tested as "v + 2 tol e is in the cone" for an interior e whose max-norm ball of radius
# 1/2 lies in the cone: (-1, 1, 2) for the exponential cone and its dual, (1, 1, 0) for power.

def _exp_member(v: np.ndarray, _: float, tol: float) -> bool:
    x, y, z = v + 2 * tol * np.array([-1.0, 1.0, 2.0])
    with np.errstate(over="ignore"):
        return bool(y * np.exp(x / y) <= z) if y > 0 else (y == 0 and x <= 0 and z >= 0)


def _exp_dual_member(v: np.ndarray, _: float, tol: float) -> bool:
    u, w_, w = v + 2 * tol * np.array([-1.0, 1.0, 2.0])
    with np.errstate(over="ignore"):
        return bool(-u * np.exp(w_ / u) <= np.e * w) if u < 0 else (u == 0 and w_ >= 0 and w >= 0)


def _pow_member(v: np.ndarray, a: float, tol: float) -> bool:
    x, y, z = v + 2 * tol * np.array([1.0, 1.0, 0.0])
    return bool(x >= 0 and y >= 0 and x**a * y ** (1 - a) >= abs(z))


def _exp_sample(rng: np.random.Generator, d: int, a: float) -> np.ndarray:
    ratio, y = rng.standard_normal(), 0.1 + rng.exponential()
    return np.array([ratio * y, y, y * np.exp(ratio) + rng.exponential()])


def _exp_dual_sample(rng: np.random.Generator, d: int, a: float) -> np.ndarray:
    x, y, z = _exp_sample(rng, d, a)  # (u - v, -u, w) = (x, y, z) in K_exp
    return np.array([-y, -y - x, z])


def _pow_sample(rng: np.random.Generator, d: int, a: float) -> np.ndarray:
    x, y = rng.exponential(size=2)
    return np.array([x, y, rng.uniform(-1, 1) * x**a * y ** (1 - a)])


def _soc_sample(rng: np.random.Generator, d: int, a: float) -> np.ndarray:
    x = rng.standard_normal(d - 1)
    return np.concatenate([[np.linalg.norm(x) + rng.exponential()], x])


def _psd_sample(rng: np.random.Generator, d: int, a: float) -> np.ndarray:
    n = round((np.sqrt(8 * d + 1) - 1) / 2)
    A = rng.standard_normal((n, n))
    return ref_svec(A @ A.T)


def _psd_constraint(p: cp.Expression, a: float) -> list:
    d = p.shape[0]
    n = round((np.sqrt(8 * d + 1) - 1) / 2)
    X = cp.Variable((n, n), symmetric=True)
    return [X >> 0, p == cp.hstack([X[i, j] * (1.0 if i == j else SQRT2)
                                    for j in range(n) for i in range(j, n)])]


KINDS: dict[str, Kind] = {
    "zero": Kind(lambda p, a: [p == 0], lambda rng, d, a: np.zeros(d),
                 lambda v, a, tol: bool(np.all(np.abs(v) <= tol))),
    "free": Kind(lambda p, a: [], lambda rng, d, a: rng.standard_normal(d), lambda v, a, tol: True),
    "nonneg": Kind(lambda p, a: [p >= 0], lambda rng, d, a: rng.exponential(size=d),
                   lambda v, a, tol: bool(np.all(v >= -tol))),
    "soc": Kind(lambda p, a: [cp.SOC(p[0], p[1:])], _soc_sample,
                lambda v, a, tol: np.linalg.norm(v[1:]) <= v[0] + tol),
    "psd": Kind(_psd_constraint, _psd_sample,
                lambda v, a, tol: np.linalg.eigvalsh(smat(v)).min() >= -tol),
    "exp": Kind(lambda p, a: [cp.constraints.ExpCone(p[0], p[1], p[2])], _exp_sample, _exp_member),
    # (u, v, w) in K_exp* iff (u - v, -u, w) in K_exp
    "exp_dual": Kind(lambda p, a: [cp.constraints.ExpCone(p[0] - p[1], -p[0], p[2])],
                     _exp_dual_sample, _exp_dual_member),
    "power": Kind(lambda p, a: [cp.constraints.PowCone3D(p[0], p[1], p[2], a)], _pow_sample,
                  _pow_member),
    # (u, v, w) in K_a* iff (u/a, v/(1-a), w) in K_a iff (u, v, a^a (1-a)^(1-a) w) in K_a
    "power_dual": Kind(lambda p, a: [cp.constraints.PowCone3D(p[0], p[1],
                                                              a**a * (1 - a) ** (1 - a) * p[2], a)],
                       lambda rng, d, a: _pow_sample(rng, d, a) * [a, 1 - a, 1],
                       lambda v, a, tol: _pow_member(v / [a, 1 - a, 1], a, tol)),
}
DUAL_KIND = {"zero": "free", "free": "zero", "exp": "exp_dual", "exp_dual": "exp",
             "power": "power_dual", "power_dual": "power"}


def blocks(dims: ConeDims, dual: bool) -> list[tuple[str, slice, float]]:
    """(kind, slice, alpha) of each block, walked independently of the module."""
    sizes = ([("zero", 1)] * dims.zero + [("nonneg", 1)] * dims.nonneg
             + [("soc", d) for d in dims.soc] + [("psd", n * (n + 1) // 2) for n in dims.psd]
             + [("exp", 3)] * dims.exp + [("exp_dual", 3)] * dims.exp_dual
             + [("power", 3)] * len(dims.power))
    alphas = [0.0] * (len(sizes) - len(dims.power)) + list(dims.power)
    out, offset = [], 0
    for (kind, d), a in zip(sizes, alphas):
        out.append((DUAL_KIND.get(kind, kind) if dual else kind, slice(offset, offset + d), a))
        offset += d
    return out


def in_cone(v: np.ndarray, dims: ConeDims, dual: bool, tol: float) -> bool:
    return all(KINDS[k].member(v[s], a, tol) for k, s, a in blocks(dims, dual))


def sample_inside(rng: np.random.Generator, dims: ConeDims, dual: bool) -> np.ndarray:
    return np.concatenate([KINDS[k].sample(rng, s.stop - s.start, a)
                           for k, s, a in blocks(dims, dual)])


def cvxpy_project(v: np.ndarray, dims: ConeDims, dual: bool) -> np.ndarray:
    """min ||p - v||^2 over the cone with cvxpy and Clarabel, block by block (it is separable)."""
    return np.concatenate([_cvxpy_project_block(v[s], KINDS[k], a)
                           for k, s, a in blocks(dims, dual)])


def _cvxpy_project_block(v: np.ndarray, kind: Kind, a: float) -> np.ndarray:
    p = cp.Variable(v.size)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(p - v)), kind.constraint(p, a))
    # Clarabel's answer is accurate to about sqrt(gap): ask for a tiny gap, and step back where
    # Clarabel cannot reach it (it then fails, or says "inaccurate" though still ~1e-7 off).
    for tol in (1e-12, 1e-11, 1e-10, 1e-9, 1e-8):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                problem.solve(solver="CLARABEL", tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol,
                              max_iter=400)
        except cp.error.SolverError:
            continue
        if problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return p.value
    raise AssertionError(f"Clarabel could not project {v.tolist()} ({problem.status})")


def assert_is_projection(dims: ConeDims, dual: bool, v: np.ndarray, p: np.ndarray,
                         tol: float = 1e-10) -> None:
    """The optimality certificate of p = Pi_K(v): p in K, p - v in K*, <p, p - v> = 0."""
    scale = max(1.0, np.linalg.norm(v))
    assert in_cone(p, dims, dual, tol * scale), f"Pi(v) not in the cone, v = {v!r}"
    assert in_cone(p - v, dims, not dual, tol * scale), f"Pi(v) - v not in the dual, v = {v!r}"
    assert abs(p @ (p - v)) <= tol * scale**2, f"not complementary, v = {v!r}"


def central_difference(f: Callable, v: np.ndarray, u: np.ndarray, eps: float) -> np.ndarray:
    return (f(v + eps * u) - f(v - eps * u)) / (2 * eps)


# One product cone per kind, primal and dual; the dual flag exercises Moreau's decomposition.
SINGLE = {
    "zero": (ConeDims(zero=3), False), "free": (ConeDims(zero=3), True),
    "nonneg": (ConeDims(nonneg=4), False), "soc": (ConeDims(soc=(5,)), False),
    "soc1": (ConeDims(soc=(1,)), False), "psd": (ConeDims(psd=(3,)), False),
    "exp": (ConeDims(exp=1), False), "exp_dual": (ConeDims(exp_dual=1), False),
    "exp_as_dual": (ConeDims(exp_dual=1), True), "exp_dual_as_dual": (ConeDims(exp=1), True),
    "power": (ConeDims(power=(0.3,)), False), "power_dual": (ConeDims(power=(0.7,)), True),
    "power_half": (ConeDims(power=(0.5,)), False),
}
MIXED = ConeDims(zero=2, nonneg=3, soc=(1, 3, 4, 3), psd=(1, 3, 2, 3), exp=3, exp_dual=2,
                 power=(0.2, 0.5, 0.9))


def sample_points(rng: np.random.Generator, dims: ConeDims, dual: bool) -> list[np.ndarray]:
    """Inside K, inside the polar -K*, generic at several scales, and near the boundary of K."""
    K = ProductCone.from_dims(dims, dual)
    generic = [rng.standard_normal(dims.size) * s for s in (1.0, 1.0, 0.1, 10.0)]
    near = [K.project(g) + 1e-3 * rng.standard_normal(dims.size) for g in generic[:2]]
    return [sample_inside(rng, dims, dual), -sample_inside(rng, dims, not dual), *generic, *near]


# ------------------------------------------------------------------ conventions

def test_svec_layout_and_inner_product():
    X = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])
    np.testing.assert_allclose(svec(X), [1, 2 * SQRT2, 3 * SQRT2, 4, 5 * SQRT2, 6], rtol=1e-15)
    rng = np.random.default_rng(0)
    for n in (1, 2, 5):
        A, B = random_symmetric(rng, n), random_symmetric(rng, n)
        np.testing.assert_allclose(svec(A), ref_svec(A), rtol=1e-14)
        np.testing.assert_allclose(svec(A) @ svec(B), np.trace(A @ B), rtol=1e-12)
        np.testing.assert_allclose(smat(svec(A)), A, atol=1e-14)
    stack = np.stack([random_symmetric(rng, 4) for _ in range(3)])
    np.testing.assert_allclose(smat(svec(stack)), stack, atol=1e-14)
    with pytest.raises(ValueError, match="n\\(n\\+1\\)/2 entries; got a block of 4"):
        smat(np.zeros(4))


def test_clarabel_permutation_round_trip():
    rng = np.random.default_rng(1)
    for n in range(1, 6):
        X = random_symmetric(rng, n)
        perm = psd_svec_permutation(n)
        np.testing.assert_array_equal(np.sort(perm), np.arange(n * (n + 1) // 2))
        np.testing.assert_allclose(svec(X)[perm], ref_svec_upper(X), rtol=1e-15)
        np.testing.assert_allclose(svec(X)[perm][np.argsort(perm)], svec(X), rtol=1e-15)
    dims = ConeDims(zero=1, nonneg=2, soc=(3,), psd=(2, 3), exp=1, power=(0.4,))
    perm = scs_to_clarabel_permutation(dims)
    np.testing.assert_array_equal(perm[:6], np.arange(6))
    np.testing.assert_array_equal(perm[6:9], 6 + psd_svec_permutation(2))
    np.testing.assert_array_equal(perm[9:15], 9 + psd_svec_permutation(3))
    np.testing.assert_array_equal(perm[15:], np.arange(15, dims.size))


def test_clarabel_psd_projection_agrees_after_permutation():
    """Clarabel itself, fed the permuted vector, returns the permuted SCS projection."""
    import clarabel

    rng = np.random.default_rng(2)
    n = 4
    v = svec(random_symmetric(rng, n))
    perm, d = psd_svec_permutation(n), v.size
    settings = clarabel.DefaultSettings()
    settings.verbose, settings.tol_gap_abs, settings.tol_gap_rel = False, 1e-12, 1e-12
    eye = sp.csc_matrix(np.eye(d))
    solver = clarabel.DefaultSolver(eye, -v[perm], -eye, np.zeros(d),
                                    [clarabel.PSDTriangleConeT(n)], settings)
    x = np.asarray(solver.solve().x)
    np.testing.assert_allclose(x, ProductCone.from_dims(ConeDims(psd=(n,))).project(v)[perm],
                               atol=1e-7)


def test_cone_dims_validation():
    assert ConeDims(zero=1, soc=(3, 2), psd=(2,), exp=1, power=(0.5,)).size == 1 + 5 + 3 + 3 + 3
    for kwargs, match in [({"zero": -1}, "ConeDims.zero must be a non-negative int"),
                          ({"nonneg": 1.5}, "ConeDims.nonneg must be a non-negative int"),
                          ({"soc": (0,)}, "ConeDims.soc must be a tuple of ints >= 1"),
                          ({"psd": [2]}, "ConeDims.psd must be a tuple"),
                          ({"power": (1.0,)}, "ConeDims.power must be a tuple of floats in")]:
        with pytest.raises(ValueError, match=match):
            ConeDims(**kwargs)
    with pytest.raises(ValueError, match="PowerCone.alpha must be a 1-D array in"):
        PowerCone(np.array([0.0]))


def test_shape_errors():
    K = ProductCone.from_dims(ConeDims(nonneg=3))
    with pytest.raises(ValueError, match=r"shape \(3,\), got shape \(4,\)"):
        K.project(np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(3,\) or \(3, m\), got shape \(2,\)"):
        K.dproject(np.ones(3)).mv(np.zeros(2))


def test_dual_structure():
    K = ProductCone.from_dims(MIXED)
    assert K.dual().is_dual and not K.dual().dual().is_dual
    assert [type(c) for c, _ in K.dual().groups] == [
        type(c) for c, _ in ProductCone.from_dims(MIXED, dual=True).groups]
    assert isinstance(ExponentialCone().dual(), DualExponentialCone)


# ------------------------------------------------------------------ projections

@pytest.mark.parametrize("name", SINGLE)
def test_projection_matches_cvxpy(name):
    dims, dual = SINGLE[name]
    rng = np.random.default_rng(list(SINGLE).index(name))
    K = ProductCone.from_dims(dims, dual)
    for v in sample_points(rng, dims, dual):
        np.testing.assert_allclose(K.project(v), cvxpy_project(v, dims, dual),
                                   atol=1e-6 * max(1, np.linalg.norm(v)))


def test_projection_of_mixed_product_matches_cvxpy():
    rng = np.random.default_rng(3)
    for dual in (False, True):
        K = ProductCone.from_dims(MIXED, dual)
        for v in sample_points(rng, MIXED, dual)[2:4]:
            np.testing.assert_allclose(K.project(v), cvxpy_project(v, MIXED, dual), atol=2e-6)


def test_psd_projection_matches_eigendecomposition():
    rng = np.random.default_rng(4)
    dims = ConeDims(psd=(1, 2, 5, 5, 7))
    v = rng.standard_normal(dims.size)
    K, offset = ProductCone.from_dims(dims), 0
    p = K.project(v)
    for n in dims.psd:
        d = n * (n + 1) // 2
        X = smat(v[offset:offset + d])
        lam, V = np.linalg.eigh(X)
        np.testing.assert_allclose(p[offset:offset + d], ref_svec(V @ np.diag(np.maximum(lam, 0))
                                                                  @ V.T), atol=1e-12)
        offset += d


@pytest.mark.parametrize("dual", [False, True])
def test_moreau_decomposition(dual):
    """v = Pi_K(v) - Pi_K*(-v), both parts in their cones, orthogonal (exact identities)."""
    rng = np.random.default_rng(5)
    K = ProductCone.from_dims(MIXED, dual)
    for v in sample_points(rng, MIXED, dual):
        p, q = K.project(v), K.dual().project(-v)
        np.testing.assert_allclose(v, p - q, atol=1e-12 * max(1.0, np.linalg.norm(v)))
        assert_is_projection(MIXED, dual, v, p)
        assert K.contains(p) and K.dual().contains(q)


def test_exponential_special_cases():
    K = ExponentialCone()
    v = np.array([[-1.0, -2.0, 3.0], [-1.0, -2.0, -3.0], [0.0, -1.0, 2.0]])  # x <= 0, y <= 0
    np.testing.assert_array_equal(K.project(v), [[-1, 0, 3], [-1, 0, 0], [0, 0, 2]])


@pytest.mark.parametrize("dual", [False, True])
def test_extreme_points_are_projected_exactly(dual):
    """Exponential and power blocks with entries from 1e-8 to 1e8 (ratios up to e^700): finite,
    certified optimal, and a derivative that is a projection Jacobian."""
    rng = np.random.default_rng(12)
    dims = ConeDims(exp=1, exp_dual=1, power=(0.01, 0.5, 0.99))
    K = ProductCone.from_dims(dims, dual)
    edge = [[1.0, 1.0, 1e-300], [1e-12, 1.0, 1.0], [-50.0, 1e-3, 1.0], [3.0, 0.0, -0.0],
            [700.0, 1.0, 1.0], [-700.0, 1.0, -1.0], [1e-8, -1e8, 1.0], [-1e8, 1e-8, -1.0]]
    for k in range(40):
        v = rng.choice([-1, 1], dims.size) * 10.0 ** rng.uniform(-8, 8, dims.size)
        if k < len(edge):
            v[:3] = edge[k]
        p = K.project(v)
        assert np.all(np.isfinite(p))
        assert_is_projection(dims, dual, v, p, tol=1e-9)
        J = K.dproject(v).as_matrix().toarray()
        assert np.all(np.isfinite(J)) and np.allclose(J, J.T, atol=1e-12)
        lam = np.linalg.eigvalsh(J)
        assert lam.min() >= -1e-7 and lam.max() <= 1 + 1e-7


def test_power_cone_flat_case():
    """z = 0 with one negative coordinate projects onto (x, y) >= 0."""
    K = PowerCone(np.array([0.3, 0.6]))
    np.testing.assert_allclose(K.project(np.array([[-1.0, 2.0, 0.0], [3.0, -1.0, 0.0]])),
                               [[0, 2, 0], [3, 0, 0]], atol=0)


def _exp_members(v: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Row-wise `_exp_member`: v + 2 tol (-1, 1, 2) in the closed exponential cone."""
    x, y, z = (v + 2 * tol[:, None] * np.array([-1.0, 1.0, 2.0])).T
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return np.where(y > 0, y * np.exp(x / y) <= z, (y == 0) & (x <= 0) & (z >= 0))


def _pow_members(v: np.ndarray, a: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Row-wise `_pow_member`: v + 2 tol (1, 1, 0) in the power cone of exponent a."""
    x, y, z = (v + 2 * tol[:, None] * np.array([1.0, 1.0, 0.0])).T
    with np.errstate(invalid="ignore"):
        return (x >= 0) & (y >= 0) & (np.maximum(x, 0) ** a * np.maximum(y, 0) ** (1 - a)
                                      >= np.abs(z))


def test_many_extreme_points_are_certified_projections():
    """Thousands of exponential and power blocks with entries from 1e-10 to 1e10: p in K,
    p - v in K*, <p, p - v> = 0, all to 1e-12 |v| (the roots are found to float resolution)."""
    rng = np.random.default_rng(14)
    n = 4000
    v = rng.choice([-1, 1], (n, 3)) * 10.0 ** rng.uniform(-10, 10, (n, 3))
    a = rng.uniform(0.01, 0.99, n)
    scale = np.maximum(1.0, np.linalg.norm(v, axis=1))
    tol = 1e-12 * scale
    dual_scale = np.stack([a, 1 - a, np.ones(n)], 1)
    for K, member, dual_member in [
        (ExponentialCone(), lambda p: _exp_members(p, tol),
         # (u, v, w) in K_exp* iff (u - v, -u, w) in K_exp (scaled by up to 2)
         lambda d: _exp_members(np.stack([d[:, 0] - d[:, 1], -d[:, 0], d[:, 2]], 1), 2 * tol)),
        (PowerCone(a), lambda p: _pow_members(p, a, tol),
         lambda d: _pow_members(d / dual_scale, a, tol / a.clip(max=1 - a))),
    ]:
        for cone, inside, outside in ((K, member, dual_member), (K.dual(), dual_member, member)):
            p = cone.project(v)
            assert np.all(np.isfinite(p))
            assert np.all(inside(p)), f"Pi(v) not in the cone for {type(cone).__name__}"
            assert np.all(outside(p - v)), f"Pi(v) - v not in the dual for {type(cone).__name__}"
            np.testing.assert_array_less(np.abs(np.sum(p * (p - v), 1)), tol * scale)


# ------------------------------------------------------------------ derivatives

def assert_matches_finite_differences(K: ProductCone, v: np.ndarray, rng: np.random.Generator,
                                      directions: int = 3, rtol: float = 1e-5,
                                      near: np.ndarray | None = None):
    """Central differences with steps 1e-6, 1e-7, 1e-8 (times the scale of v): the best must agree.

    Several steps because near a region boundary (where the second derivative is large) only a
    small step is accurate, while elsewhere a small step only adds rounding error. ``near``
    seeds the derivative's root searches (a solver's answer).
    """
    D = K.dproject(v, near)
    scale = max(1.0, np.abs(v).max())
    for _ in range(directions):
        u = rng.standard_normal(v.size)
        error = min(np.abs(D.mv(u) - central_difference(K.project, v, u, eps * scale)).max()
                    for eps in (1e-6, 1e-7, 1e-8))
        assert error <= rtol * np.linalg.norm(u), f"DPi u is {error:.2e} off at v = {v!r}"


@pytest.mark.parametrize("name", SINGLE)
def test_derivative_matches_finite_differences(name):
    dims, dual = SINGLE[name]
    rng = np.random.default_rng(50 + list(SINGLE).index(name))
    K = ProductCone.from_dims(dims, dual)
    for v in sample_points(rng, dims, dual):
        assert_matches_finite_differences(K, v, rng)


def test_derivative_of_mixed_product_matches_finite_differences():
    rng = np.random.default_rng(6)
    for dual in (False, True):
        K = ProductCone.from_dims(MIXED, dual)
        for v in sample_points(rng, MIXED, dual):
            assert_matches_finite_differences(K, v, rng)


def test_exponential_derivative_in_special_regions():
    rng = np.random.default_rng(7)
    K = ProductCone.from_dims(ConeDims(exp=1))
    cases = {(-1.0, -2.0, 3.0): np.diag([1.0, 0, 1]), (-1.0, -2.0, -3.0): np.diag([1.0, 0, 0]),
             (1.0, 2.0, 10.0): np.eye(3), (1.0, -2.0, -10.0): np.zeros((3, 3))}
    for v, expected in cases.items():
        v = np.array(v)
        np.testing.assert_array_equal(K.dproject(v).as_matrix().toarray(), expected)
        assert_matches_finite_differences(K, v, rng)
    # near the boundaries between the regions, on both sides
    for v in ([-1e-3, 1.0, 1.0], [1.0, 1.0, np.e + 1e-3], [1.0, 1.0, np.e - 1e-3],
              [1e-3, -1.0, 1.0], [-1e-3, 1e-3, 1.0], [1.0, -1.0, -1 / np.e + 1e-3],
              [1.0, 10.0, -1e-3], [-30.0, 1.0, -1.0], [30.0, 1.0, -1.0]):
        assert_matches_finite_differences(K, np.array(v), rng, rtol=2e-5)


@pytest.mark.parametrize("dual", [False, True])
def test_seeded_exponential_derivative_of_a_few_cones_matches_finite_differences(dual):
    """A few seeded exponential cones (a small GP's backward pass) take the row-by-row path
    (`_exponential_rows`); in every region, with seeds off by 1e-8 or useless (NaN, far)."""
    rng = np.random.default_rng(17)
    dims = ConeDims(exp=0 if dual else 4, exp_dual=4 if dual else 0)
    K = ProductCone.from_dims(dims, dual)
    regions = ([-1.0, -2.0, 3.0], [1.0, 2.0, 10.0], [1.0, -2.0, -10.0], [-1e-3, 1.0, 1.0])
    for _ in range(6):
        v = 3 * rng.standard_normal(dims.size)
        if not dual:
            v[:3] = regions[rng.integers(len(regions))]
        p = K.project(v)
        for near in (p * (1 + 1e-8 * rng.standard_normal(p.size)), np.full(p.size, np.nan),
                     p + 10 * rng.standard_normal(p.size)):
            assert_matches_finite_differences(K, v, rng, near=near)


@pytest.mark.parametrize("dual", [False, True])
def test_seeded_power_derivative_matches_finite_differences(dual):
    """Power cones seeded by their projections (the backward pass's solver point) polish the
    seed's root by plain Newton steps; with seeds off by 1e-8 or useless (NaN, far: the
    bracketed search then takes the row), the derivative matches finite differences, in the
    generic region and next to the polar cone."""
    rng = np.random.default_rng(19)
    alphas = (0.3, 0.5, 0.8, 0.15)
    dims = ConeDims(power=alphas)
    K = ProductCone.from_dims(dims, dual)
    for trial in range(6):
        v = 2 * rng.standard_normal(dims.size)
        if trial == 0 and not dual:
            v[:3] = [-1.0, -2.0, 0.5]  # both negative: Newton's step taken in r
        p = K.project(v)
        for near in (p * (1 + 1e-8 * rng.standard_normal(p.size)), np.full(p.size, np.nan),
                     p + 10 * rng.standard_normal(p.size)):
            assert_matches_finite_differences(K, v, rng, near=near)


def test_a_good_seed_spares_the_power_cones_bracketed_search(monkeypatch):
    """Seeded by projections off by 1e-9, every generic power cone's root is polished from
    its seed (no bracketed search); unseeded, every one is searched; the derivatives agree."""
    from dpplayers.cones import _power

    searched = []
    search = _power.bracketed_newton

    def counted(f, params, lo, hi, x):
        searched.append(lo.size)
        return search(f, params, lo, hi, x)

    monkeypatch.setattr(_power, "bracketed_newton", counted)
    rng = np.random.default_rng(23)
    K = ProductCone.from_dims(ConeDims(power=tuple(rng.uniform(0.1, 0.9, 40))), dual=True)
    v = 2 * rng.standard_normal(K.size)
    near = K.project(v) * (1 + 1e-9 * rng.standard_normal(K.size))
    searched.clear()  # the projection's own searches
    seeded = K.dproject(v, near).as_matrix().toarray()
    assert searched == []
    plain = K.dproject(v).as_matrix().toarray()
    assert searched and searched[0] > 20  # the generic ones of the 40
    np.testing.assert_allclose(seeded, plain, rtol=1e-9, atol=1e-11)


def test_power_derivative_near_the_flat_case():
    """At z = 0 the derivative is the limit from z -> 0: dz/dz0 is 1, 1/2 or 0 as the exponent of
    the negative coordinate is below, at or above 1/2; nearby it matches finite differences."""
    rng = np.random.default_rng(13)
    for a, gamma in ((0.3, 1.0), (0.5, 0.5), (0.7, 0.0)):
        K = ProductCone.from_dims(ConeDims(power=(a,)))
        np.testing.assert_array_equal(K.dproject(np.array([-1.0, 2.0, 0.0])).as_matrix().toarray(),
                                      np.diag([0.0, 1.0, gamma]))
        np.testing.assert_array_equal(K.dproject(np.array([2.0, -1.0, 0.0])).as_matrix().toarray(),
                                      np.diag([1.0, 0.0, 1.0 - gamma]))
        for z in (1e-3, -1e-2, 0.3):
            assert_matches_finite_differences(K, np.array([-1.0, 2.0, z]), rng)
            assert_matches_finite_differences(K, np.array([2.0, -1.0, z]), rng)


@pytest.mark.parametrize("dual", [False, True])
def test_derivative_is_a_projection_jacobian(dual):
    """Symmetric with eigenvalues in [0, 1], also exactly on region boundaries, never NaN."""
    rng = np.random.default_rng(8)
    K = ProductCone.from_dims(MIXED, dual)
    boundary = [K.project(rng.standard_normal(MIXED.size)) for _ in range(3)]
    for v in [np.zeros(MIXED.size), *boundary, *sample_points(rng, MIXED, dual)]:
        J = K.dproject(v).as_matrix().toarray()
        assert np.all(np.isfinite(J))
        np.testing.assert_allclose(J, J.T, atol=1e-12)
        lam = np.linalg.eigvalsh(J)
        assert lam.min() >= -1e-8 and lam.max() <= 1 + 1e-8
    soc = ProductCone.from_dims(ConeDims(soc=(3, 3)))
    J = soc.dproject(np.array([5.0, 3.0, 4.0, -5.0, 3.0, 4.0])).as_matrix().toarray()
    np.testing.assert_array_equal(J, np.diag([1.0, 1, 1, 0, 0, 0]))  # ||x|| = t and = -t


def test_mv_matches_as_matrix_and_transpose():
    rng = np.random.default_rng(9)
    for dual in (False, True):
        K = ProductCone.from_dims(MIXED, dual)
        D = K.dproject(rng.standard_normal(MIXED.size))
        M = D.as_matrix()
        assert isinstance(M, sp.csc_array) and M.shape == (K.size, K.size)
        eye = np.eye(K.size)
        np.testing.assert_allclose(D.mv(eye), M.toarray(), atol=1e-14)
        for j in range(K.size):
            np.testing.assert_allclose(D.mv(eye[:, j]), M[:, [j]].toarray()[:, 0], atol=1e-14)
        u, w = rng.standard_normal(K.size), rng.standard_normal(K.size)
        assert abs(w @ D.mv(u) - D.T.mv(w) @ u) <= 1e-12 * np.linalg.norm(u) * np.linalg.norm(w)


def test_product_equals_per_cone_results():
    """Many cones of mixed kinds and random sizes, vectorised, equal each cone on its own."""
    rng = np.random.default_rng(10)
    dims = ConeDims(zero=3, nonneg=5, soc=tuple(int(d) for d in rng.integers(1, 6, 12)),
                    psd=tuple(int(n) for n in rng.integers(1, 5, 8)), exp=15, exp_dual=7,
                    power=tuple(float(a) for a in rng.uniform(0.05, 0.95, 9)))
    for dual in (False, True):
        K = ProductCone.from_dims(dims, dual)
        v = rng.standard_normal(dims.size) * rng.exponential(size=dims.size)
        p, J = K.project(v), K.dproject(v).as_matrix().toarray()
        for kind, s, a in blocks(dims, dual):
            d = s.stop - s.start
            single = {"zero": {"zero": 1}, "free": {"zero": 1}, "nonneg": {"nonneg": 1},
                      "soc": {"soc": (d,)}, "psd": {"psd": (int(np.sqrt(2 * d)),)},
                      "exp": {"exp": 1}, "exp_dual": {"exp_dual": 1},
                      "power": {"power": (a,)}, "power_dual": {"power": (a,)}}[kind]
            one = ProductCone.from_dims(ConeDims(**single), kind in ("free", "power_dual"))
            np.testing.assert_array_equal(p[s], one.project(v[s]))
            np.testing.assert_array_equal(J[s, s], one.dproject(v[s]).as_matrix().toarray())


def test_root_searches_ignore_the_batch():
    """Exponential and power rows finish their root searches after different numbers of steps;
    each row's projection and derivative are still bit for bit those of the row alone."""
    rng = np.random.default_rng(15)
    n = 120
    v = rng.standard_normal((n, 3)) * 10.0 ** rng.uniform(-6, 6, (n, 1))
    v[::3] = ExponentialCone().project(v[::3]) + 1e-9 * rng.standard_normal((len(v[::3]), 3))
    a = rng.uniform(0.02, 0.98, n)
    for cone, row in [(ExponentialCone(), lambda i: ExponentialCone()),
                      (DualExponentialCone(), lambda i: DualExponentialCone()),
                      (PowerCone(a), lambda i: PowerCone(a[i:i + 1]))]:
        p, J = cone.project(v), cone.dproject(v).as_matrices()
        for i in range(n):
            np.testing.assert_array_equal(p[i], row(i).project(v[i:i + 1])[0])
            np.testing.assert_array_equal(J[i], row(i).dproject(v[i:i + 1]).as_matrices()[0])


# ------------------------------------------------------------------ root search

def _cubic(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x**3 - c, -(x**3 - c) / (3 * x**2)


def _s_curve(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x - c + 3 tanh(10 (x - c)): linear far away (Newton overshoots towards the far end)."""
    f = x - c + 3 * np.tanh(10 * (x - c))
    return f, -f / (1 + 30 / np.cosh(10 * (x - c)) ** 2)


def _flat(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero on [c - 1, c + 1], increasing outside; its Newton steps are 0/0 on the plateau."""
    f = np.maximum(x - c - 1, 0) ** 3 - np.maximum(c - 1 - x, 0) ** 3
    return f, -f / (3 * (np.maximum(x - c - 1, 0) ** 2 + np.maximum(c - 1 - x, 0) ** 2))


def _wiggle(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Increasing, with long stretches where f' is nearly 0 (Newton steps land outside)."""
    f = (x - c) + 0.99 * np.sin(x - c)
    return f, -f / (1 + 0.99 * np.cos(x - c))


@pytest.mark.parametrize("f", [_cubic, _s_curve, _flat, _wiggle])
def test_bracketed_newton_ends_where_bisection_would(f):
    """On roots from 1e-8 to 1e8 and brackets up to 1e10 wide: f(lo) < 0 <= f(hi) (or f = 0),
    hi - lo within the tolerance, the exact root inside (or f = 0 there), and no more
    evaluations than bisection (the cubic, with Newton converging linearly from afar, is
    close to that bound; the others stay well below it)."""
    from dpplayers.cones._root import RTOL, bracketed_newton

    rng = np.random.default_rng(16)
    n = 400
    root = rng.choice([-1, 1], n) * 10.0 ** rng.uniform(-8, 8, n)
    c = root**3 if f is _cubic else root
    lo = root - 10.0 ** rng.uniform(-3, 10, n) - (f is _flat) * 2
    hi = root + 10.0 ** rng.uniform(-3, 10, n) + (f is _flat) * 2
    calls = []

    def counted(x, c):
        calls.append(x.size)
        return f(x, c)

    a, b = bracketed_newton(counted, (c,), lo, hi, lo + rng.uniform(0, 1, n) * (hi - lo))
    with np.errstate(invalid="ignore", divide="ignore"):  # Newton steps are 0/0 on _flat
        fa, fb = f(a, c)[0], f(b, c)[0]
    assert np.all(((fa < 0) & (fb >= 0)) | ((a == b) & (fa == 0)))
    np.testing.assert_array_less(b - a, 1.01 * RTOL * (1 + np.abs(a)) + 1e-300)
    if f is not _flat:  # there any point of the plateau is a root
        np.testing.assert_array_less(np.abs(0.5 * (a + b) - root), 2 * RTOL * (1 + np.abs(root)))
    # Bisection from these brackets takes about 85 steps; the smooth ones take far fewer here.
    assert len(calls) <= {_cubic: 100, _s_curve: 30, _flat: 70, _wiggle: 45}[f]


# ------------------------------------------------------------------ diffcp

def diffcp_cones(dims: ConeDims) -> dict:
    return {"z": dims.zero, "l": dims.nonneg, "q": list(dims.soc), "s": list(dims.psd),
            "ep": dims.exp, "ed": dims.exp_dual}


@pytest.mark.parametrize("dual", [False, True])
def test_matches_diffcp(dual):
    diffcp_cones_lib = pytest.importorskip("diffcp.cones")
    from diffcp import _diffcp

    rng = np.random.default_rng(11)
    dims = ConeDims(zero=2, nonneg=4, soc=(1, 3, 5), psd=(1, 2, 4), exp=4, exp_dual=3)
    parsed = diffcp_cones_lib.parse_cone_dict(diffcp_cones(dims))
    K = ProductCone.from_dims(dims, dual)
    # Generic points only: diffcp's exponential-cone projection is accurate to about 1e-6, and
    # its membership test misclassifies some points within 1e-3 of the boundary.
    for v in sample_points(rng, dims, dual)[2:6]:
        np.testing.assert_allclose(K.project(v), diffcp_cones_lib.pi(v, parsed, dual=dual),
                                   atol=2e-6)
        expected = _diffcp.dprojection_dense(v, diffcp_cones_lib.parse_cone_dict_cpp(parsed), dual)
        np.testing.assert_allclose(K.dproject(v).as_matrix().toarray(), expected, atol=1e-5)


# ------------------------------------------------------------------ exhaustive sweeps

@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_sweep_projection_and_derivative(seed):
    rng = np.random.default_rng(100 + seed)
    dims = ConeDims(nonneg=2, soc=(int(rng.integers(1, 8)),), psd=(int(rng.integers(1, 6)),),
                    exp=2, exp_dual=2, power=(float(rng.uniform(0.02, 0.98)),))
    for dual in (False, True):
        K = ProductCone.from_dims(dims, dual)
        for v in sample_points(rng, dims, dual):
            # Clarabel is ~1e-5 off at some of these points (its gap cannot go below ~1e-12):
            # check that we are at least as close to v as Clarabel, and certify optimality.
            p, q = K.project(v), cvxpy_project(v, dims, dual)
            scale = max(1.0, np.linalg.norm(v))
            np.testing.assert_allclose(p, q, atol=1e-4 * scale)
            assert np.linalg.norm(p - v) <= np.linalg.norm(q - v) + 1e-12 * scale
            assert_is_projection(dims, dual, v, p)
            assert_matches_finite_differences(K, v, rng)


def test_seeded_derivative_equals_unseeded():
    """A seed near the projection (a solver's answer) changes the root search's start only."""
    rng = np.random.default_rng(11)
    dims = ConeDims(nonneg=3, soc=(4,), exp=30, exp_dual=5, power=(0.3, 0.7))
    cone = ProductCone.from_dims(dims, dual=True)
    v = rng.standard_normal(dims.size) * 3
    near = cone.project(v) + 1e-7 * rng.standard_normal(dims.size)
    seeded = cone.dproject(v, near=near).as_matrix().toarray()
    plain = cone.dproject(v).as_matrix().toarray()
    np.testing.assert_allclose(seeded, plain, rtol=1e-9, atol=1e-11)


def test_batched_dproject_splits_into_the_per_column_operators():
    """The batched DΠ (each group's cones of all columns in one call) splits back into
    exactly the per-column operators, with and without a root seed."""
    rng = np.random.default_rng(12)
    for dual in (False, True):
        K = ProductCone.from_dims(MIXED, dual)
        V = rng.standard_normal((K.size, 4))
        near = np.stack([K.project(V[:, j]) for j in range(4)], axis=1)
        for seed in (None, near):
            batch = K.dproject_batch(V, seed)
            assert batch.count == 4
            for j, D in enumerate(batch.element(k) for k in range(4)):
                one = K.dproject(V[:, j], None if seed is None else seed[:, j])
                np.testing.assert_allclose(D.as_matrix().toarray(), one.as_matrix().toarray(),
                                           atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        K.dproject_batch(V[:-1])


def test_batched_dproject_products_and_block_values_are_per_column():
    """The batched operator's product and block values equal each column's own operator's,
    column by column; a wrongly shaped input is refused with its shape."""
    rng = np.random.default_rng(13)
    K = ProductCone.from_dims(MIXED, dual=True)
    V = rng.standard_normal((K.size, 3))
    D = K.dproject_batch(V)
    G = rng.standard_normal((K.size, 3, 2))
    DG = D.mv(G)
    values = D.block_values()
    np.testing.assert_allclose(D.mv(G, by_values=True), DG, atol=1e-12)
    for j in range(3):
        one = K.dproject(V[:, j])
        np.testing.assert_allclose(DG[:, j], one.mv(G[:, j]), atol=1e-12)
        np.testing.assert_allclose(values[:, j], one.block_values(), atol=1e-12)
    with pytest.raises(ValueError, match=rf"\({K.size}, 3, m\), got shape \({K.size}, 2, 2\)"):
        D.mv(G[:, :2])


@pytest.mark.parametrize("kind, d", [("soc", 6), ("soc", 90), ("psd", 4), ("psd", 13)])
def test_closed_form_products_equal_the_dense_blocks(kind, d, monkeypatch):
    """SOC and PSD blocks apply their dense matrices up to DENSE_MV_MAX and their closed
    forms above it: both products agree, small and large, in the middle region (where the
    SOC block is a rank-one-corrected identity and PSD has eigenvalues of both signs)."""
    import dpplayers.cones._operators as operators

    rng = np.random.default_rng(14)
    size = d if kind == "soc" else d * (d + 1) // 2
    K = ProductCone.from_dims(ConeDims(soc=(size,) * 2) if kind == "soc"
                              else ConeDims(psd=(d, d)))
    x = rng.standard_normal((2, size))
    x[:, 0] = 0.3 * np.linalg.norm(x[:, 1:], axis=1)  # SOC: |t| < ‖rest‖, the middle region
    block, _ = K.dproject(x.ravel()).blocks[0]
    G = rng.standard_normal((2, size, 3))
    monkeypatch.setattr(operators, "DENSE_MV_MAX", 0)
    closed = block.mv(G)
    monkeypatch.setattr(operators, "DENSE_MV_MAX", 10**6)
    dense = block.mv(G)
    np.testing.assert_allclose(closed, dense, atol=1e-12)
    np.testing.assert_allclose(dense, block.as_matrices() @ G, atol=1e-12)


def test_psd_blocks_sum_over_the_fewer_columns_and_stay_exact(monkeypatch):
    """PSD blocks above DENSE_MV_MAX sum W diag(b) Wᵀ over their columns with b ≠ 0, or are
    I − W diag(1 − b) Wᵀ over those with b ≠ 1, whichever are fewer: blocks mostly
    positive, mostly negative and mixed (12 × 12, order 78), alone and in one batch, each
    equal to central differences of the projection (an eigendecomposition) and to the
    closed-form product on the identity."""
    import dpplayers.cones._operators as operators

    rng = np.random.default_rng(21)
    n, size = 12, 78
    assert size > operators.DENSE_MV_MAX
    K = ProductCone.from_dims(ConeDims(psd=(n,) * 3))
    spectra = [np.r_[-1.5, np.linspace(0.5, 3.0, n - 1)], np.r_[np.linspace(-3.0, -0.5, n - 1), 2.0],
               np.linspace(-2.0, 2.5, n)]
    Q = np.linalg.qr(rng.standard_normal((3, n, n)))[0]
    X = np.stack([Q[i] @ np.diag(spectra[i]) @ Q[i].T for i in range(3)])
    x = np.concatenate([svec(X[i]) for i in range(3)])
    block, _ = K.dproject(x).blocks[0]
    M = block.as_matrices()
    alone = [ProductCone.from_dims(ConeDims(psd=(n,))).dproject(svec(X[i])).blocks[0][0]
             for i in range(3)]
    for i in range(3):
        np.testing.assert_array_equal(alone[i].as_matrices()[0], M[i])
    eps, E = 1e-6, np.eye(3 * size)
    fd = np.stack([(K.project(x + eps * e) - K.project(x - eps * e)) / (2 * eps) for e in E], 1)
    for i in range(3):
        s = slice(i * size, (i + 1) * size)
        np.testing.assert_allclose(M[i], fd[s, s], atol=1e-7)
    monkeypatch.setattr(operators, "DENSE_MV_MAX", 0)
    closed = block.mv(np.broadcast_to(np.eye(size), (3, size, size)).copy())
    np.testing.assert_allclose(M, closed, atol=1e-13)
