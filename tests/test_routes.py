"""Every fast path of the derivative is reached by a real problem, with no constant lowered,
and is exact there (issue #18 item 4): the answers equal the dense mode's, one LU of the
whole J per element.

Which problems reach which route (counted over the zoo and ``benchmarks/``, 2026-12-06):
the batched dense solve with 2×2 pair pivots and Schur terms — most of the zoo (and
``tests/test_derivative.py``), its diagonal pivots — the zoo's ``soc_projection_large``;
inactive-row compaction, per-thread scratch reuse and the per-element LU of a batch — a
lasso with a box (below; the zoo's ``lasso_box``); the LP basis's LU, SuperLU, the fill
memory and the single-precision LU — a standard-form LP whose basis fills in (below; the
zoo's ``lp_filled_basis``, ``benchmarks``' sparse_lp); the truncated minimum-norm answer —
the zoo's degenerate families and ``tests/test_degenerate.py``; the band LU — MPCs and
total-variation denoising (below; the zoo's ``mpc_box``, ``tv_denoise``), entropy and power
terms per entry (``rel_entr``, ``power_frac``, ``inv_pos`` and 14 more families), with a
dense border logistic regression and sparsemax (below; ``logistic_fit``,
``simplex_projection``), declining a singular J (the zoo's ``mpc_repeated_x0``)
(2026-12-07). (Counted by wrapping each route's entry point while the zoo runs.)
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

import dpplayers
from benchmarks.gallery import mpc as gallery_mpc
from dpplayers._derivative.conditioning import POLYHEDRAL_CONDITION_LIMIT
from dpplayers._derivative.linear_solvers import DenseLU, SparseLU


def relative_gap(got, want) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1.0))


def test_an_lp_basis_that_fills_in_goes_dense_in_single_precision():
    """A standard-form LP (1,000 variables, 500 rows, 1% random A plus a ±3 diagonal on a
    basis): the first element's basis of order 500 gets SuperLU, fills in, and the next
    element's gets LAPACK's LU in single precision, refined to double; both derivatives
    equal the dense mode's."""
    n, m = 1000, 500
    rng = np.random.default_rng(6)
    basis = rng.permutation(n)[:m]
    A = (sp.random_array((m, n), density=0.01, format="csc", rng=rng,
                         data_sampler=rng.standard_normal)
         + sp.csc_array((3.0 * rng.choice([-1.0, 1.0], m), (np.arange(m), basis)),
                        shape=(m, n))).tocsc()
    x, c, b = cp.Variable(n), cp.Parameter(n), cp.Parameter(m)
    problem = cp.Problem(cp.Minimize(c @ x), [A @ x == b, x >= 0])
    x0 = np.zeros((2, n))
    x0[:, basis] = rng.uniform(0.5, 1.5, (2, m))
    slack = rng.uniform(0.1, 1.0, (2, n))
    slack[:, basis] = 0.0
    values = [(A.T @ rng.standard_normal((m, 2))).T + slack, (A @ x0.T).T]
    cotangent = rng.standard_normal((2, n))
    tangents = [rng.standard_normal((2, n)), rng.standard_normal((2, m))]
    answers = {}
    for mode in ("direct", "dense"):
        prog = dpplayers.compile(problem, [c, b], [x], mode=mode)
        sol = prog.solve(*values, solver_args={"eps": 1e-9})
        answers[mode] = (sol.vjp(cotangent), sol.jvp(*tangents))
        if mode == "direct":
            first, second = (sol._derivative.element(k)[1].lu.lu for k in (0, 1))
            assert isinstance(first, SparseLU) and prog.kkt_pattern.plan.filled["basis"]
            assert isinstance(second, DenseLU) and second.single
            assert not sol.degenerate.any()
    (g, t), (g_ref, t_ref) = answers["direct"], answers["dense"]
    for got, want in zip((*g, *t), (*g_ref, *t_ref)):
        assert relative_gap(got, want) < 1e-8


def test_a_box_lasso_batch_drops_its_inactive_rows_in_one_batched_solve():
    """Lasso with a box (F 100 × 50, batch 4): J's order after pair elimination is 300,
    above the batched solve's limit; each element's inactive rows bring it below, so the
    batch is solved together (compacted blocks in per-thread scratch arrays, one LU per
    element at this order) and no element is factorised alone. Equal to the dense mode."""
    rng = np.random.default_rng(2)
    F, g, lam = cp.Parameter((100, 50)), cp.Parameter(100), cp.Parameter(nonneg=True)
    x = cp.Variable(50)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g) + lam * cp.norm1(x)),
                         [x >= -1, x <= 1])
    Fv = rng.standard_normal((4, 100, 50)) / 10
    sparse = rng.standard_normal((4, 50)) * (rng.uniform(size=(4, 50)) < 0.3) * 2
    values = [Fv, np.einsum("bij,bj->bi", Fv, sparse) + 0.1 * rng.standard_normal((4, 100)),
              np.full(4, 0.1)]
    cotangent = rng.standard_normal((4, 50))
    answers = {}
    for mode in ("direct", "dense"):
        prog = dpplayers.compile(problem, [F, g, lam], [x], mode=mode)
        sol = prog.solve(*values, solver_args={"eps": 1e-9})
        answers[mode] = sol.vjp(cotangent)
        if mode == "direct":
            assert prog.kkt_pattern.plan.pairs.reduced_order > 200
            batches = sol._derivative.dense_batches(list(range(4)))
            assert [sorted(places) for places, _ in batches] == [[0, 1, 2, 3]]  # one call
            assert batches[0][1]().drop is not None  # inactive rows dropped per element
            assert not sol._derivative.factors  # nobody needed Direct
    for got, want in zip(answers["direct"], answers["dense"]):
        assert relative_gap(got, want) < 1e-8


def test_a_large_core_eliminates_its_pair_pivots_before_the_lu():
    """The projection onto the 20 × 20 spectraplex (cvxpy's sum_squares(X − C) auxiliaries
    beside a PSD block): J's order is 1,221 and 6% full, but its LU after the 2×2 pair
    pivots and S's 210 diagonal pivots is of order 211 and full, so the batched solve takes
    the batch (plan ``full``); an element's own Direct (where the batch hands one over)
    factorises the Schur complement of its pair pivots (order 421) instead of J. vjp and
    jvp equal the dense mode's (one LU of the whole J), at batch 2."""
    k = 20
    X, C = cp.Variable((k, k), symmetric=True), cp.Parameter((k, k))
    problem = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.trace(X) == 1])
    rng = np.random.default_rng(9)
    N = rng.standard_normal((2, k, k)) / np.sqrt(k)
    values = 0.5 * (N + N.transpose(0, 2, 1))
    cotangent, tangent = rng.standard_normal((2, 2, k, k))
    answers = {}
    for mode in ("direct", "dense"):
        prog = dpplayers.compile(problem, [C], [X], mode=mode)
        sol = prog.solve(values, solver_args={"eps": 1e-10})
        answers[mode] = (*sol.vjp(cotangent), *sol.jvp(tangent))
        if mode == "direct":
            plan = prog.kkt_pattern.plan
            assert plan.full and plan.pairs.reduced_order - plan.pairs.diagonal == 211
            assert not sol._derivative.factors  # the batched solve answered both
            state = sol._derivative.element(1)[1]
            assert state.pairs is not None and state.J_RR.shape[0] < state.J.shape[0] / 2
            assert not sol.degenerate.any()
    for got, want in zip(answers["direct"], answers["dense"]):
        assert relative_gap(got, want) < 1e-8


def test_a_free_auxiliary_is_left_out_of_the_lu_without_changing_the_outputs():
    """A constrained MPC with |u| ≤ 1 written with abs (cvxpy's t with |u| ≤ t ≤ 1 is free
    on [|u|, 1] wherever |u| < 1, so J is singular): the batched solve drops such t with
    the inactive rows and Direct leaves them out of its core (z_t = 0 both ways) instead of
    taking J's minimum-norm solve; the requested outputs equal the dense mode's
    minimum-norm answer, and they are not flagged degenerate, since they are unique."""
    case = gallery_mpc(np.random.default_rng(0))  # the gallery's MPC layer (T = 10)
    problem, (x0, theta), (u,) = case.problem, case.parameters, case.variables
    T = u.shape[0]
    rng = np.random.default_rng(3)
    values = [3 * rng.standard_normal((3, 2)), np.array([0.9, 0.8, 1.0])]
    cotangent, tangents = rng.standard_normal((3, T)), [rng.standard_normal((3, 2)),
                                                        rng.standard_normal(3)]
    answers = {}
    for mode in ("direct", "dense"):
        prog = dpplayers.compile(problem, [x0, theta], [u], mode=mode)
        sol = prog.solve(*values, solver_args={"eps": 1e-10})
        answers[mode] = (*sol.vjp(cotangent), *sol.jvp(*tangents))
        if mode == "direct":
            assert not sol.degenerate.any()
            assert not sol._derivative.factors  # every element solved in the batch
            _, state, op = sol._derivative.element(0)
            assert state.lu is not None and state.truncated is None  # no minimum-norm solve
            free = np.setdiff1d(op.pattern.plan.singletons(op).core, state.peel.core)  # left out of the LU
            assert free.size and np.isin(free, prog.auxiliaries.candidates).all()
        else:
            assert sol.degenerate.all()  # the whole J is singular
    for got, want in zip(answers["direct"], answers["dense"]):
        assert relative_gap(got, want) < 1e-8


def test_a_polyhedral_band_batch_keeps_its_suspect_lus_that_gbcon_clears(monkeypatch):
    """The horizon-20 MPC of ``benchmarks/`` (|u| ≤ 1 as two inequalities: every block of D
    1×1) takes the band LU (J of order 288 within 21 sub- and super-diagonals in reverse
    Cuthill–McKee order); some elements' LUs probe as suspect (cond₁ ~1e5-1e7, well-posed
    for such J, :mod:`dpplayers._derivative.conditioning`); gbcon on the LU at hand clears
    them instead of ``Direct`` redoing the element. vjp and jvp equal the dense mode's (one
    LU of the whole J per element), at two parameter draws of a batch of 8."""
    from benchmarks.workloads import WORKLOADS
    from dpplayers import _lapack

    cleared = []
    gbcon = _lapack.gbcon

    def counted(*args):
        cleared.append(gbcon(*args))
        return cleared[-1]

    monkeypatch.setattr(_lapack, "gbcon", counted)
    workload = WORKLOADS["mpc20"]
    form = workload.formulations()["native"]
    rng = np.random.default_rng(4)
    for draw in (0, 2):
        values = workload.values(8, draw)["native"]
        cotangent = rng.standard_normal((8, *form.output.shape))
        tangents = [rng.standard_normal(v.shape) for v in values]
        answers = {}
        for mode in ("direct", "dense"):
            prog = dpplayers.compile(form.problem, list(form.parameters), [form.output],
                                     mode=mode)
            sol = prog.solve(*values, solver_args={"eps": 1e-10})
            answers[mode] = (*sol.vjp(cotangent), *sol.jvp(*tangents))
            if mode == "direct":
                layout = prog.kkt_pattern.band
                assert (layout.order, layout.kl, layout.ku) == (288, 21, 21)
                assert not sol.degenerate.any()
                assert not sol._derivative.factors  # every element solved in the batch
        for got, want in zip(answers["direct"], answers["dense"]):
            assert relative_gap(got, want) < 1e-8
    assert any(1.0 / rcond <= POLYHEDRAL_CONDITION_LIMIT for rcond in cleared if rcond > 0)
    assert all(rcond > 0 for rcond in cleared)  # each estimated element was kept


def _segments(x: np.ndarray, tol: float = 1e-5) -> list[np.ndarray]:
    """The runs of equal consecutive entries of a total-variation solution; each step
    between runs clearly one (a step near the tolerance is a nearly fused pair, where
    the closed form's runs are ambiguous: these draws have none)."""
    steps = np.abs(np.diff(x))
    assert not np.any((steps > tol) & (steps < 1e-4))
    return np.split(np.arange(x.size), np.flatnonzero(steps > tol) + 1)


def test_total_variation_denoising_takes_the_band_lu_and_has_the_closed_form_jacobian():
    """1-D total-variation denoising, min ‖x − y‖² + λ‖Dx‖₁ over 60 points: J (order 357)
    lies within 7 diagonals of reverse Cuthill–McKee order and takes the band LU. Its
    solution is piecewise constant, each run x_S = mean(y_S) + a shift fixed by the signs
    at the run's ends, so ∂x/∂y averages y over each run: block entries 1/|S| (a closed
    form, not our code). The full Jacobian matches it at two batches of parameter values,
    compiled with none set."""
    n = 60
    x, y = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y) + 0.5 * cp.norm1(cp.diff(x))))
    prog = dpplayers.compile(problem, [y], [x], solver="CLARABEL")  # runs to ~1e-10
    assert prog.kkt_pattern.band is not None and prog.kkt_pattern.band.kl <= 8
    rng = np.random.default_rng(11)
    for batch in (3, 9):
        values = np.repeat(rng.standard_normal((batch, 6)) * 2.0, 10, axis=1)
        values += 0.05 * rng.standard_normal((batch, n))
        sol = prog.solve(values)
        jac = sol.jacobian()[0][0]  # (batch, n, n): ∂x/∂y per element
        assert not sol.degenerate.any() and not sol._derivative.factors
        for k in range(batch):
            want = np.zeros((n, n))
            runs = _segments(sol.values[0][k])
            assert 3 <= len(runs) <= n - 10  # fused runs, and more than one
            for run in runs:
                want[np.ix_(run, run)] = 1.0 / run.size
            assert np.abs(jac[k] - want).max() < 1e-6


def test_logistic_regression_takes_the_bordered_band_lu_and_matches_implicit_differentiation():
    """ℓ2-regularised logistic regression on 120 samples (rows z_i = y_i x_i, the labels
    folded in): J (order ~1,210) is a narrow band once the 8 coefficients' dense rows and
    columns are set aside as a border, and takes the bordered band LU. Its vjp on the data
    equals implicit differentiation of the optimality condition ∇L(w; Z) = 0 written out in
    NumPy (a closed form, not our code): u = −H⁻¹g with H = Zᵀ diag(σ(1−σ)) Z / m + 2λI,
    σ_i = σ(−z_iᵀw), and ∂(uᵀ∇L)/∂z_i = (−σ_i u + σ_i(1 − σ_i)(z_iᵀu) w) / m at w*, at
    two batches of data, compiled with none set."""
    m, n, lam = 120, 8, 0.05
    w, Z = cp.Variable(n), cp.Parameter((m, n))
    problem = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-(Z @ w))) / m
                                     + lam * cp.sum_squares(w)))
    prog = dpplayers.compile(problem, [Z], [w], solver="CLARABEL")
    layout = prog.kkt_pattern.band
    assert layout is not None and layout.border == n and layout.kl <= 8
    rng = np.random.default_rng(5)
    for batch in (2, 5):
        data = rng.standard_normal((batch, m, n))
        labels = np.sign(data @ rng.standard_normal(n) + 0.5 * rng.standard_normal((batch, m)))
        data *= labels[..., None]
        sol = prog.solve(data, solver_args={"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11,
                                            "tol_feas": 1e-11})
        g = rng.standard_normal((batch, n))
        (grad,) = sol.vjp(g)
        assert not sol._derivative.factors  # every element by the band LU
        for k in range(batch):
            wk, Zk = sol.values[0][k], data[k]
            s = 1 / (1 + np.exp(Zk @ wk))  # σ(−z_iᵀw)
            H = Zk.T @ (Zk * (s * (1 - s))[:, None]) / m + 2 * lam * np.eye(n)
            u = -np.linalg.solve(H, g[k])
            want = (-s[:, None] * u[None, :] + ((s * (1 - s)) * (Zk @ u))[:, None] * wk) / m
            assert relative_gap(grad[k], want) < 1e-7  # the solve's accuracy: ~1e-8


def test_sparsemax_takes_the_band_lu_with_a_border_of_one_and_has_the_closed_form_jacobian(
        monkeypatch):
    """sparsemax, the projection of y onto the probability simplex, over 60 entries: J
    (order 241) lies within 2 diagonals in reverse Cuthill–McKee order once the row of
    Σ x = 1 is set aside as a border of one, and takes the bordered band LU (the batched
    executor would assemble S of order 121 for an LU of order 1). On the support S of x,
    x_S = y_S − τ, so ∂x/∂y = diag(s) − s sᵀ / |S| with s S's indicator (a closed form, not
    our code). The full Jacobian matches it at two batches of parameter values, compiled
    with none set; no element goes to the batched executor or to a factorisation of its
    own."""
    from dpplayers._derivative import batch

    def refused(*args, **kwargs):
        raise AssertionError("an element left the band LU")

    monkeypatch.setattr(batch.DenseBatch, "solve", refused)
    n = 60
    x, y = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0])
    prog = dpplayers.compile(problem, [y], [x], solver="CLARABEL")
    layout = prog.kkt_pattern.band
    assert layout is not None and layout.border == 1 and layout.kl <= 2
    rng = np.random.default_rng(8)
    for batch_size in (3, 9):
        values = rng.standard_normal((batch_size, n)) / 3.0
        sol = prog.solve(values)
        jac = sol.jacobian()[0][0]  # (batch, n, n): ∂x/∂y per element
        assert not sol.degenerate.any() and not sol._derivative.factors
        for k in range(batch_size):
            support = (sol.values[0][k] > 1e-6).astype(float)
            assert 2 <= support.sum() <= n - 10  # a face of the simplex, not a vertex
            want = np.diag(support) - np.outer(support, support) / support.sum()
            assert np.abs(jac[k] - want).max() < 1e-6
