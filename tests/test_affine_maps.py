"""StackedMaps: the gathers picked for C θ̃ and Cᵀ g agree with the sparse products."""

import numpy as np
import pytest
import scipy.sparse as sp

from dpplayers._compile.affine_maps import AffineMap, Gather, StackedMaps


def _maps(rng, p, single):
    """Three affine maps on θ̃ = [θ; 1]: with ``single``, each parameter entry enters one
    datum and each datum copies at most one entry (cvxpy's usual maps), else not."""
    order = rng.permutation(p)
    sizes, start, maps = (4, p - 7, 3), 0, []
    for rows in sizes:
        cols = order[start : start + rows]
        start += rows
        linear = sp.coo_array((rng.standard_normal(rows), (np.arange(rows), cols)),
                              shape=(rows, p)).toarray()
        linear[rng.random(rows) < 0.3] = 0.0  # data that copy nothing
        if not single:
            linear[0, order[-1]] += 1.0  # a datum of two entries, an entry in two data
        constant = rng.standard_normal((rows, 1))
        maps.append(AffineMap(sp.csr_array(np.hstack([linear, constant]))))
    return maps


@pytest.mark.parametrize("single", [True, False])
def test_gathers_match_the_sparse_products(single):
    rng = np.random.default_rng(0)
    p = 20
    maps = _maps(rng, p, single)
    stacked = StackedMaps.build(maps)
    assert isinstance(stacked.forward, Gather) == single
    assert isinstance(stacked.backward, Gather) == single
    theta = np.vstack([rng.standard_normal((p, 3)), np.ones((1, 3))])
    for got, cmap in zip(stacked(theta), maps):
        np.testing.assert_allclose(got, cmap(theta), rtol=1e-14, atol=1e-14)
    cotangents = [rng.standard_normal((m.matrix.shape[0], 3)) for m in maps]
    want = sum(m.matrix[:, :-1].T @ g for m, g in zip(maps, cotangents))
    np.testing.assert_allclose(stacked.transpose(cotangents), want, rtol=1e-14, atol=1e-14)


def test_data_map_evaluation_is_exactly_the_sparse_product():
    """C θ̃ as the forward pass evaluates it (a gather reading θ̃'s 1 for constant rows, a
    pair gather for rows of at most two entries, constants added only where a row has
    both) equals the sparse product entry for entry, at two parameter points."""
    rng = np.random.default_rng(3)
    p = 12
    for two_per_row in (False, True):
        linear = np.zeros((9, p))
        linear[[0, 1, 2, 5], [3, 0, 7, 11]] = rng.standard_normal(4)  # one entry
        if two_per_row:
            linear[[3, 4], [1, 2]] = rng.standard_normal(2)
            linear[[3, 4], [9, 5]] = rng.standard_normal(2)  # a second entry
        constant = np.array([[0.0], [1.5], [0.0], [-2.0], [0.0], [0.0], [3.0], [0.0], [0.0]])
        maps = [AffineMap(sp.csr_array(np.hstack([linear[:4], constant[:4]]))),
                AffineMap(sp.csr_array(np.hstack([linear[4:], constant[4:]])))]
        stacked = StackedMaps.build(maps)
        for _ in range(2):
            theta = np.vstack([rng.standard_normal((p, 2)), np.ones((1, 2))])
            for got, cmap in zip(stacked(theta), maps):
                np.testing.assert_array_equal(got, cmap(theta))
