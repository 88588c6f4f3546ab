"""The exact 2×2 pair elimination behind the batched dense solve (dpplayers._derivative.pair_pivots)."""

import numpy as np
import scipy.sparse as sp

from dpplayers._derivative.pair_pivots import PairPivots, as_indices


def planted(rng, r=7, e=4, b=3):
    """A batch of b matrices of order r + 2e with e pair pivots planted at (p, q): p's row
    and column touch only {p, q}; each q row/column also meets the rest R."""
    N = r + 2 * e
    perm = rng.permutation(N)
    rest, q, p = perm[:r], perm[r : r + e], perm[r + e :]
    mats = np.zeros((b, N, N))
    mats[:, rest[:, None], rest[None, :]] = rng.standard_normal((b, r, r)) + 4 * np.eye(r)
    mats[:, rest[:, None], q[None, :]] = rng.standard_normal((b, r, e))
    mats[:, q[:, None], rest[None, :]] = rng.standard_normal((b, e, r))
    mats[:, p, p] = rng.uniform(1, 2, (b, e))
    mats[:, p, q] = rng.choice([-1.0, 1.0], (b, e))
    mats[:, q, p] = mats[:, p, q]
    return mats, p, q


def pivots_of(mats, may_be_p=None, may_be_q=None, may_be_diagonal=None):
    """PairPivots of the batch's common pattern, and each matrix's data in its order."""
    N = mats.shape[1]
    pattern = sp.csc_array((np.abs(mats).sum(axis=0) > 0).astype(float))
    pattern.sort_indices()
    allowed = np.ones(N, bool)
    cols = np.repeat(np.arange(N), np.diff(pattern.indptr))
    pv = PairPivots.of(N, pattern.indices, cols, allowed if may_be_p is None else may_be_p,
                       allowed if may_be_q is None else may_be_q, may_be_diagonal)
    return pv, mats[:, pattern.indices, cols]


def assert_solves_exactly(pv, values, mats, rhs, residual=True):
    """pv.solve against numpy's dense solve, for the matrices and their transposes (and,
    with ``residual``, the residual it reports at rounding level)."""
    for transpose in (False, True):
        M = mats.transpose(0, 2, 1) if transpose else mats
        z, res_sq = pv.solve(values, rhs, transpose)
        np.testing.assert_allclose(z, np.linalg.solve(M, rhs), rtol=1e-10, atol=1e-12)
        if residual:
            assert res_sq.max() < 1e-24


def test_planted_pairs_are_found():
    rng = np.random.default_rng(0)
    mats, p, q = planted(rng)
    pv, _ = pivots_of(mats)
    assert sorted(zip(pv.p.tolist(), pv.q.tolist())) == sorted(zip(p.tolist(), q.tolist()))
    assert pv.reduced_order == mats.shape[1] - 2 * p.size


def test_solve_is_exact_for_the_matrix_and_its_transpose():
    rng = np.random.default_rng(1)
    mats, _, _ = planted(rng)
    pv, values = pivots_of(mats)
    rhs = rng.standard_normal((mats.shape[0], mats.shape[1], 2))
    for transpose in (False, True):
        M = mats.transpose(0, 2, 1) if transpose else mats
        z, res_sq = pv.solve(values, rhs, transpose)
        np.testing.assert_allclose(z, np.linalg.solve(M, rhs), rtol=1e-10, atol=1e-12)
        res = M @ z - rhs
        np.testing.assert_allclose(res_sq, np.einsum("bik,bik->bk", res, res), atol=1e-24)
        assert res_sq.max() < 1e-24


def test_a_column_with_a_third_entry_is_no_pivot():
    rng = np.random.default_rng(2)
    mats, p, q = planted(rng)
    other = next(i for i in range(mats.shape[1]) if i not in (p[0], q[0]))
    mats[:, other, p[0]] = 1.0  # p[0] now meets the rest of the matrix
    pv, values = pivots_of(mats)
    assert p[0] not in pv.p and pv.p.size == p.size - 1
    rhs = rng.standard_normal((mats.shape[0], mats.shape[1], 1))
    z, _ = pv.solve(values, rhs, False)
    np.testing.assert_allclose(z, np.linalg.solve(mats, rhs), rtol=1e-10, atol=1e-12)


def test_pairs_whose_q_rows_meet_are_not_both_chosen():
    rng = np.random.default_rng(3)
    mats, _, q = planted(rng)
    mats[:, q[0], q[1]] = 0.5  # the two pivots would no longer decouple
    pv, values = pivots_of(mats)
    assert not {q[0], q[1]} <= set(pv.q.tolist())
    assert_solves_exactly(pv, values, mats, rng.standard_normal((mats.shape[0], mats.shape[1], 1)),
                          residual=False)


def test_masks_restrict_the_pairs():
    rng = np.random.default_rng(4)
    mats, p, _ = planted(rng)
    may_be_p = np.ones(mats.shape[1], bool)
    may_be_p[p[0]] = False
    pv, _ = pivots_of(mats, may_be_p=may_be_p)
    assert p[0] not in pv.p and pv.p.size == p.size - 1


def test_singular_pivot_gives_non_finite_answer_for_that_element_only():
    rng = np.random.default_rng(5)
    mats, p, q = planted(rng)
    mats[1, p[0], p[0]] = 1.0
    mats[1, p[0], q[0]] = mats[1, q[0], p[0]] = 0.0  # a stored zero: det = 0 for element 1
    pv, values = pivots_of(mats)
    assert p[0] in pv.p
    rhs = rng.standard_normal((mats.shape[0], mats.shape[1], 1))
    z, _ = pv.solve(values, rhs, False)
    assert not np.isfinite(z[1]).all()
    for k in (0, 2):
        np.testing.assert_allclose(z[k], np.linalg.solve(mats[k], rhs[k]), rtol=1e-10, atol=1e-12)


def sparse_couplings(rng, r=7, e=4, b=3):
    """Like ``planted``, but each q meets R in one row entry and one column entry, and the
    first two pairs meet the same two entries of R (a symmetric variable's u_ij and u_ji):
    their products land on the same places of S."""
    mats, p, q = planted(rng, r, e, b)
    rest = np.setdiff1d(np.arange(mats.shape[1]), np.concatenate([p, q]))
    mats[:, rest[:, None], q[None, :]] = 0.0
    mats[:, q[:, None], rest[None, :]] = 0.0
    rows = rest[np.array([0, 0, *range(1, e - 1)])]
    cols = rest[np.array([1, 1, *range(2, e)])]
    mats[:, rows, q] = rng.standard_normal((b, e))
    mats[:, q, cols] = rng.standard_normal((b, e))
    return mats


def test_sparse_schur_update_is_exact_where_products_repeat_a_place():
    rng = np.random.default_rng(7)
    for b in (1, 3):
        mats = sparse_couplings(rng, b=b)
        pv, values = pivots_of(mats)
        terms = pv.schur_terms
        assert terms is not None and terms.starts is not None  # summed where places repeat
        assert terms.j.size == pv.q.size and terms.target_i.size == pv.q.size - 1
        # J_RQ and J_QR held as their entries, two of J_RQ's in one row (a product sums them)
        rq, qr = pv.transposed._entries
        assert not isinstance(rq._runs, bool) or not isinstance(qr._runs, bool)
        assert_solves_exactly(pv, values, mats, rng.standard_normal((b, mats.shape[1], 2)))


def test_dense_couplings_keep_the_dense_schur_update():
    pv, _ = pivots_of(planted(np.random.default_rng(8))[0])
    assert pv.schur_terms is None  # each pair meets all of R: 49 products per pair
    assert pv._entries is None  # and J_RQ, J_QR are dense blocks


def leading_diagonal(rng, k=18, c=6, b=3):
    """A batch of b matrices whose first k indices x_j meet each other only on the diagonal,
    which comes from pair pivots alone (cvxpy's x of ‖x − y‖²: u_j − x_j = …): x_j meets
    its pair's q_j and the last c indices C densely. Order k + c + 2k."""
    N = k + c + 2 * k
    x, C, q, p = np.arange(k), k + np.arange(c), k + c + np.arange(k), k + c + k + np.arange(k)
    mats = np.zeros((b, N, N))
    mats[:, C[:, None], C[None, :]] = rng.standard_normal((b, c, c)) + 4 * np.eye(c)
    mats[:, x[:, None], C[None, :]] = rng.standard_normal((b, k, c))
    mats[:, C[:, None], x[None, :]] = rng.standard_normal((b, c, k))
    mats[:, q, x] = mats[:, x, q] = -1.0
    mats[:, p, p] = rng.uniform(1, 2, (b, k))
    mats[:, p, q] = mats[:, q, p] = 1.0
    return mats


def test_pivot_update_goes_line_by_line_where_lines_hold_one_entry():
    """Rows of C that each meet one x (a bound x_i ≥ 0, a PSD row on its variable) and one
    that meets them all (Σ x = 1): S's update by the x pivots row by row, a dense product
    for the full row alone; for Jᵀ the same lines are columns. Exact either way."""
    rng = np.random.default_rng(13)
    k, c, b = 18, 20, 3
    mats = leading_diagonal(rng, k=k, c=c, b=b)
    x, C = np.arange(k), k + np.arange(c)
    mats[:, C[:, None], x[None, :]] = 0.0
    mats[:, C[:k], x] = rng.standard_normal((b, k))  # row C_i meets x_i alone
    mats[:, C[k], x] = rng.standard_normal((b, k))  # C_18 meets every x; C_19 none
    N = mats.shape[1]
    pv, values = pivots_of(mats, may_be_diagonal=np.arange(N) < k)
    assert pv.diagonal == k
    lines, lines_T = pv.lines, pv.transposed.lines
    assert lines.rows and as_indices(lines.single).size == k and lines.dense.tolist() == [k]
    assert lines_T is not None and not lines_T.rows  # Jᵀ: S_IC's columns
    assert_solves_exactly(pv, values, mats, rng.standard_normal((b, N, 2)))
    # where x meets C densely both ways, the dense product stays
    dense = leading_diagonal(rng)
    assert pivots_of(dense, may_be_diagonal=np.arange(dense.shape[1]) < k)[0].lines is None


def simplex_like(rng, k=18, b=3):
    """A sparsemax-like batch: x_1..x_k divided out first (pair pivots), then k bound rows
    C_i meeting x_i alone (diagonal D − I, zero where active) and one row Σ x meeting
    them all: after the x's, C is an arrow whose bound rows are pivots of their own."""
    c = k + 1
    mats = leading_diagonal(rng, k=k, c=c, b=b)
    x, C = np.arange(k), k + np.arange(c)
    mats[:, C[:, None], C[None, :]] = 0.0
    mats[:, C, C] = np.where(rng.uniform(size=(b, c)) < 0.5, 0.0, -1.0)  # active or not
    mats[:, C[:, None], x[None, :]] = 0.0
    mats[:, x[:, None], C[None, :]] = 0.0
    mats[:, C[:k], x] = mats[:, x, C[:k]] = rng.uniform(0.5, 2.0, (b, k))
    mats[:, C[k], x] = mats[:, x, C[k]] = 1.0
    return mats


def test_bound_rows_after_the_variables_are_pivots_of_their_own():
    """S's complement after the x's is an arrow: its bound rows are divided out too, and
    the LU is of order 1. An element whose bound-row pivot is zero is solved whole."""
    rng = np.random.default_rng(14)
    k = 18
    mats = simplex_like(rng, k=k)
    N = mats.shape[1]
    masks = {"may_be_p": np.arange(N) >= N - k, "may_be_q": (np.arange(N) >= N - 2 * k)
             & (np.arange(N) < N - k), "may_be_diagonal": np.arange(N) < k}
    pv, values = pivots_of(mats, **masks)
    J, K = pv.second
    assert pv.diagonal == k and J.size == k and K.size == 1
    assert pv.transposed.second is not None
    assert_solves_exactly(pv, values, mats, rng.standard_normal((3, N, 2)))
    # element 1's bound row 0 meets its x_0 by 1e-5 (the pivot a² / d: near zero, so J is
    # near-singular): that element is NaN (handed to Direct), the others exact
    mats[1, k, 0] = mats[1, 0, k] = 1e-5
    mats[1, k, k] = 0.0
    values = pivots_of(mats, **masks)[1]  # the same pattern: other elements fill it
    rhs = rng.standard_normal((3, N, 1))
    z, _ = pv.solve(values, rhs, False)
    assert not np.isfinite(z[1]).all()
    for e in (0, 2):
        np.testing.assert_allclose(z[e], np.linalg.solve(mats[e], rhs[e]), rtol=1e-10, atol=1e-12)


def test_leading_diagonal_pivots_of_s_are_eliminated_exactly():
    rng = np.random.default_rng(9)
    for b in (1, 3):
        mats = leading_diagonal(rng, b=b)
        N = mats.shape[1]
        pv, values = pivots_of(mats)
        assert pv.diagonal == 0  # none without the mask
        pv, values = pivots_of(mats, may_be_diagonal=np.arange(N) < 18)
        assert pv.q.size == 18 and pv.reduced_order == 24 and pv.diagonal == 18
        # the update lands on those pivots alone: S is J_RR less it there, not a copy
        terms = pv.transposed.schur_terms
        assert terms.on_diagonal and terms.reach == 18
        assert_solves_exactly(pv, values, mats, rng.standard_normal((b, N, 2)))


def test_a_diagonal_pivot_without_a_pair_keeps_its_own_entry():
    """x_5 meets no pair (its diagonal is J's own): the update lands on the other 17 pivots,
    and S's diagonal is J_RR's less the update where it lands."""
    rng = np.random.default_rng(12)
    mats = leading_diagonal(rng)
    N, q5 = mats.shape[1], 18 + 6 + 5
    mats[:, q5, 5] = mats[:, 5, q5] = 0.0
    mats[:, 5, 5] = 2.0
    pv, values = pivots_of(mats, may_be_diagonal=np.arange(N) < 18)
    terms = pv.transposed.schur_terms
    assert pv.diagonal == 18 and terms.on_diagonal and terms.target_i.size == 17
    assert_solves_exactly(pv, values, mats, rng.standard_normal((3, N, 2)))


def test_diagonal_run_ends_at_a_coupling_or_a_disallowed_index():
    rng = np.random.default_rng(10)
    mats = leading_diagonal(rng)
    N = mats.shape[1]
    mats[:, 16, 17] = 0.5  # x_16 and x_17 meet: the run stops before 17
    pv, values = pivots_of(mats, may_be_diagonal=np.arange(N) < 18)
    assert pv.diagonal == 17
    assert pv.schur_terms.reach == 18  # past the run: S is written out whole
    assert_solves_exactly(pv, values, mats, rng.standard_normal((3, N, 1)), residual=False)
    allowed = np.arange(N) < 18
    allowed[3] = False  # a run shorter than DIAGONAL_MIN is not taken
    assert pivots_of(mats, may_be_diagonal=allowed)[0].diagonal == 0


def test_zero_diagonal_pivot_gives_non_finite_answer_for_that_element_only():
    rng = np.random.default_rng(11)
    mats = leading_diagonal(rng, k=18, c=20)
    N = mats.shape[1]
    x = np.arange(18)
    mats[:, x, x] = 3.0  # S_jj = J_jj + P_j (the pair's pivot adds P_j) ...
    p2 = 18 + 20 + 18 + 2
    mats[1, 2, 2] = -mats[1, p2, p2]  # ... which is zero for element 1, j = 2
    pv, values = pivots_of(mats, may_be_diagonal=np.arange(N) < 18)
    assert pv.diagonal == 18
    rhs = rng.standard_normal((3, N, 1))
    z, _ = pv.solve(values, rhs, False)
    assert np.linalg.cond(mats[1]) < 1e8  # J itself is fine: only the elimination order fails
    assert not np.isfinite(z[1]).all()
    for k in (0, 2):
        np.testing.assert_allclose(z[k], np.linalg.solve(mats[k], rhs[k]), rtol=1e-10, atol=1e-12)
