"""J assembled on the fixed pattern equals J applied as an operator, on every cone kind."""

import numpy as np
import pytest
import scipy.sparse as sp

from dpplayers._derivative.kkt import kkt_operator, kkt_pattern
from dpplayers._derivative.pattern import DENSE_BLOCK
from dpplayers.cones import ConeDims, ProductCone


@pytest.mark.parametrize("density", [0.05, 0.6])
def test_assembled_J_equals_the_operator(density):
    rng = np.random.default_rng(1)
    dims = ConeDims(zero=3, nonneg=4, soc=(3, DENSE_BLOCK, 9, 9), psd=(2, 4), exp=2,
                    power=(0.3,))
    m, n = dims.size, 17
    keep = np.ones(m)
    keep[5] = 0.0  # an empty row of A inside the nonneg cone
    A = sp.csc_matrix(sp.diags(keep) @ sp.random(m, n, density=density, random_state=rng))
    A.eliminate_zeros()
    A.sort_indices()
    M = rng.standard_normal((n, n))
    P = sp.triu(sp.csc_matrix(M @ M.T * (rng.random((n, n)) < 0.3)), format="csc")
    cone = ProductCone.from_dims(dims, dual=True)
    v = rng.standard_normal(m)
    y = cone.project(v)
    op = kkt_operator(P, A, y, y - v, dims, kkt_pattern(P, A, cone), cone)
    dense = op.as_matrix().toarray()
    columns = op.mv(np.eye(n + m))
    np.testing.assert_allclose(dense, columns, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.T.as_matrix().toarray(), columns.T, rtol=1e-12, atol=1e-12)
    # the dense products really ran: the pattern holds one per block of order ≥ DENSE_BLOCK
    pattern = op.pattern
    assert len(pattern.dense) == 3 + 1  # SOC 6, 9, 9 and the 4×4 PSD block (order 10)
    # the entries the batched solve reads, each at its (row, column) of J, once; summed
    # paired products where a column of A meets several rows of one small block (density 0.6)
    entries = pattern.entries(P.data, A.data, op.D.block_values())
    assert entries.size == pattern.indices.size
    np.testing.assert_allclose(entries, columns[pattern.entry_rows, pattern.entry_cols],
                               rtol=1e-12, atol=1e-12)
    assert (pattern.paired_starts is not None) == (density > 0.5)


@pytest.mark.parametrize("rows", [1, 3])
def test_set_columns_writes_every_layout(rows):
    """One row is written flat, several through the 2-D index; a strided one-row target
    (where a flat view would be a copy) still receives its values."""
    from dpplayers._sparse import set_columns

    rng = np.random.default_rng(0)
    at = rng.permutation(40)[:15]
    values = rng.standard_normal((rows, 15))
    for target in (np.zeros((rows, 40)), np.zeros((rows, 80))[:, ::2]):
        set_columns(target, at, values)
        expected = np.zeros((rows, 40))
        expected[:, at] = values
        np.testing.assert_array_equal(target, expected)
