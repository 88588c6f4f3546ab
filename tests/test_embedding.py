"""``mode="embedding"``: the self-dual embedding's operator M solved by LSQR (the reference form).

Oracles, none of them the code under test: finite differences of the embedding's residual
map N(z) (written out separately in ``embedding.residual``) for M and for the data
derivative; the default ``"direct"`` mode; diffcp's ``solve_and_derivative`` on the same
cone program (P = 0, no power cone: diffcp's exact modes lack both); central finite
differences of CVXPY re-solves for a QP with a parametric P.
"""

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import CASES

import dpplayers
from dpplayers._derivative.embedding import (
    EmbeddingLSQR,
    EmbeddingOperator,
    data_cotangent,
    data_tangent,
    embedding_operator,
    residual,
)

SCS_TIGHT = {"eps": 1e-10, "max_iters": 200_000}
#: The relative agreement asked of the embedding mode with the other routes (LSQR at its
#: default tolerances reaches 1e-10 and better on these problems; SCS's accuracy bounds it).
REL = 1e-6

#: (case, quad_obj): every cone kind; quad_obj=False keeps P = 0 where the case has squares.
LINEAR = [("lp_box", False), ("lp_equality_form", False), ("socp_ball_linear", False),
          ("sdp_lambda_max", False), ("exp_softmax", False), ("exp_kl_div", False),
          ("dual_soc", False), ("dual_psd", False)]
POWER = [("pow_geo_mean", False), ("pow_power_1_5", False)]
QUADRATIC = [("qp_optnet", True), ("qp_nonneg_least_squares", True),
             ("dual_equality_inequality", True), ("pow_geo_mean", True)]
POINTS = (0, 1)
BATCHES = (None, 2)


def values_at(case, point: int, batch: int | None) -> list[np.ndarray]:
    """The case's parameter values at a seeded point; a batch stacks several points."""
    if batch is None:
        return case.sample(np.random.default_rng(point))
    samples = [case.sample(np.random.default_rng(100 * point + j)) for j in range(batch)]
    return [np.stack(vs) for vs in zip(*samples)]


def relative_error(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    return float(np.abs(got - want).max(initial=0.0) / max(1.0, np.abs(want).max(initial=0.0)))


def flat(nested) -> list[np.ndarray]:
    if isinstance(nested, (tuple, list)):
        return [a for item in nested for a in flat(item)]
    return [np.asarray(nested)]


def compiled(name: str, quad_obj: bool, mode: str):
    case = CASES[name]()
    assert all(p.value is None for p in case.parameters)  # compiled with values unset
    return case, dpplayers.compile(case.problem, case.parameters, case.variables,
                                   quad_obj=quad_obj, mode=mode)


def embedding_at_solution(prog, sol, k: int = 0) -> EmbeddingOperator:
    P, A, b, c = prog.element_data(sol._data, k)
    D = prog.dual_cone.dproject(sol.y[:, k] - sol.s[:, k], near=sol.y[:, k])
    return embedding_operator(P, A, b, c, sol.x[:, k], sol.y[:, k], D)


# -- the operator against the residual map it differentiates -------------------------------


def residual_jacobian(z, P, A, b, c, cone, scale: float = 1.0, eps: float = 1e-6):
    """Central differences of scale · N(z), column by column."""
    cols = []
    for i in range(z.size):
        e = np.zeros(z.size)
        e[i] = eps
        cols.append((residual(z + e, P, A, b, c, cone) - residual(z - e, P, A, b, c, cone))
                    * scale / (2 * eps))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("name, quad_obj", [("qp_optnet", True), ("dual_soc", True),
                                            ("exp_softmax", False)])
def test_operator_is_the_residual_jacobian(name, quad_obj):
    """M equals finite differences of N(z) at a solution (validates the P ≠ 0 derivation
    independently: N is written out from Q̃, M from its derivative), and w·M those of
    w·N = R at a point off the solution with w ≠ 1 (the 1/τ and 1/τ² terms)."""
    case, prog = compiled(name, quad_obj, "direct")
    assert (prog.P is not None) == quad_obj
    sol = prog.solve(*values_at(case, 0, None), solver_args=SCS_TIGHT)
    P, A, b, c = prog.element_data(sol._data, 0)
    cone = prog.dual_cone
    z = np.concatenate([sol.x[:, 0], sol.y[:, 0] - sol.s[:, 0], [1.0]])
    assert np.abs(residual(z, P, A, b, c, cone)).max() < 1e-7  # a solution
    M = EmbeddingOperator.at(z, P, A, b, c, cone).as_matrix()
    np.testing.assert_allclose(M, embedding_at_solution(prog, sol).as_matrix(), atol=1e-8)
    FD = residual_jacobian(z, P, A, b, c, cone)
    assert np.abs(M - FD).max() <= 1e-6 * max(1.0, np.abs(FD).max())
    # off the solution: N = R/w, so w·M = DR = finite differences of w·N (w held fixed)
    rng = np.random.default_rng(3)
    z2 = z + 1e-2 * rng.standard_normal(z.size)
    z2[-1] = 1.7
    w = z2[-1]
    def R(zz: np.ndarray) -> np.ndarray:
        return residual(zz, P, A, b, c, cone) * abs(zz[-1])

    FD2 = np.stack([(R(z2 + e) - R(z2 - e)) / 2e-6 for e in 1e-6 * np.eye(z2.size)], axis=1)
    M2 = EmbeddingOperator.at(z2, P, A, b, c, cone).as_matrix()
    assert np.abs(w * M2 - FD2).max() <= 1e-6 * max(1.0, np.abs(FD2).max())


@pytest.mark.parametrize("name, quad_obj", [("qp_optnet", True), ("sdp_lambda_max", False)])
def test_operator_transpose_and_null_vector(name, quad_obj):
    """⟨Mᵀa, b⟩ = ⟨a, Mb⟩, as_matrix of the transpose is the transpose, and M z = 0 (N is
    positively homogeneous in z, so the solution ray is M's null space)."""
    case, prog = compiled(name, quad_obj, "direct")
    sol = prog.solve(*values_at(case, 1, None), solver_args=SCS_TIGHT)
    op = embedding_at_solution(prog, sol)
    rng = np.random.default_rng(0)
    a, bb = rng.standard_normal((2, op.in_size, 3))
    np.testing.assert_allclose(np.sum(op.T.mv(a) * bb), np.sum(a * op.mv(bb)), rtol=1e-12)
    np.testing.assert_allclose(op.T.as_matrix(), op.as_matrix().T, atol=1e-12)
    z = np.concatenate([sol.x[:, 0], sol.y[:, 0] - sol.s[:, 0], [1.0]])
    assert np.linalg.norm(op.mv(z)) <= 1e-7 * np.linalg.norm(z)


@pytest.mark.parametrize("name, quad_obj", [("qp_optnet", True), ("exp_kl_div", False)])
def test_data_tangent_is_the_residual_derivative(name, quad_obj):
    """dQ̃ (the right-hand side) equals finite differences of N in the data (P upper, A, b,
    c) at fixed z, and its adjoint is its transpose."""
    case, prog = compiled(name, quad_obj, "direct")
    sol = prog.solve(*values_at(case, 0, None), solver_args=SCS_TIGHT)
    P, A, b, c = prog.element_data(sol._data, 0)
    op = embedding_at_solution(prog, sol)
    z = np.concatenate([sol.x[:, 0], sol.y[:, 0] - sol.s[:, 0], [1.0]])
    patterns = prog.data_patterns
    rng = np.random.default_rng(5)
    dP = rng.standard_normal(P.nnz) if P is not None else None
    dA, db, dc = rng.standard_normal(A.nnz), rng.standard_normal(b.size), rng.standard_normal(c.size)

    def N(t: float) -> np.ndarray:
        Pt = None if P is None else sp.csc_matrix((P.data + t * dP, P.indices, P.indptr), P.shape)
        At = sp.csc_matrix((A.data + t * dA, A.indices, A.indptr), A.shape)
        return residual(z, Pt, At, b + t * db, c + t * dc, prog.dual_cone)

    fd = (N(1e-6) - N(-1e-6)) / 2e-6
    got = data_tangent(op, patterns, None if dP is None else dP[:, None], dA[:, None],
                       db[:, None], dc[:, None])[:, 0]
    np.testing.assert_allclose(got, fd, atol=1e-7 * max(1.0, np.abs(fd).max()))
    t = rng.standard_normal((op.in_size, 1))
    gP, gA, gb, gc = data_cotangent(op, patterns, t)
    lhs = float(t[:, 0] @ got)
    rhs = gA[:, 0] @ dA + gb[:, 0] @ db + gc[:, 0] @ dc + (0.0 if gP is None else gP[:, 0] @ dP)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10)


# -- the public derivative against the default mode ------------------------------------------


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name, quad_obj", LINEAR + POWER + QUADRATIC)
def test_matches_direct(name, quad_obj, batch, point):
    """vjp, jvp and jacobian equal the default mode's (same solver input, same solution)."""
    case, direct = compiled(name, quad_obj, "direct")
    _, embedding = compiled(name, quad_obj, "embedding")
    assert (direct.P is not None) == quad_obj
    values = values_at(case, point, batch)
    ref = direct.solve(*values, solver_args=SCS_TIGHT)
    sol = embedding.solve(*values, solver_args=SCS_TIGHT)
    assert sol.mode == "embedding"
    rng = np.random.default_rng(point)
    cts = [rng.standard_normal(np.shape(v)) for v in ref.values]
    tangents = [rng.standard_normal(np.shape(v)) for v in values]
    for got, want in ((sol.vjp(*cts), ref.vjp(*cts)), (sol.jvp(*tangents), ref.jvp(*tangents)),
                      (sol.jacobian(), ref.jacobian())):
        for g, w in zip(flat(got), flat(want)):
            assert g.shape == w.shape
            assert relative_error(g, w) <= REL, (name, relative_error(g, w))
    assert np.all(sol.residual < 1e-8) and not sol.fell_back.any()


# -- against diffcp, on the cone program's data ----------------------------------------------


diffcp = pytest.importorskip("diffcp")


def cone_dict(k) -> dict:
    return {"z": k.zero, "l": k.nonneg, "q": list(k.soc), "s": list(k.psd), "ep": k.exp,
            "ed": k.exp_dual}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name, quad_obj", LINEAR)
def test_matches_diffcp(name, quad_obj, batch):
    """On each element's cone program (A, b, c): the embedding mode's data → (dx, dy) map
    and its adjoint (dx, dy) → (dA, db, dc) equal diffcp's derivative and adjoint."""
    case, prog = compiled(name, quad_obj, "embedding")
    assert prog.P is None and not prog.cones.power
    sol = prog.solve(*values_at(case, 0, batch), solver_args={"eps": 1e-11, "max_iters": 500_000})
    nb, n = sol.x.shape[1], prog.n
    rng = np.random.default_rng(7)
    dtheta = rng.standard_normal((prog.layout.theta_size, nb))
    _, data_stage, middle, _ = sol._chain  # the embedding's stage: data ↔ [dx; dy]
    ours_t = middle.forward(data_stage.forward(dtheta))  # [dx; dy] per element
    G = rng.standard_normal((n + prog.m, nb, 1))
    _, gA, gb, gc = middle.backward(G)
    _, dA, db, dc = prog.data_linear(dtheta)
    rows, cols = prog.A.rows, prog.A.cols
    for k in range(nb):
        _, A, b, c = prog.element_data(sol._data, k)
        x, _, _, D, DT = diffcp.solve_and_derivative(A.copy(), b, c, cone_dict(prog.cones),
                                                     mode="dense", eps=1e-11, max_iters=500_000)
        assert relative_error(sol.x[:, k], x) < 1e-6  # the same point
        dA_k = sp.csc_matrix((dA[:, k], (rows, cols)), shape=A.shape)
        dx, dy, _ = D(dA_k, db[:, k], dc[:, k])
        assert relative_error(ours_t[:n, k], dx) <= REL
        assert relative_error(ours_t[n:, k], dy) <= REL
        gA_ref, gb_ref, gc_ref = DT(G[:n, k, 0], G[n:, k, 0], np.zeros(prog.m))
        scale = max(1.0, np.abs(gb_ref).max(), np.abs(gc_ref).max())
        np.testing.assert_allclose(gc[:, k], gc_ref, atol=REL * scale)
        np.testing.assert_allclose(gb[:, k], gb_ref, atol=REL * scale)
        np.testing.assert_allclose(gA[:, k], np.asarray(gA_ref.toarray())[rows, cols],
                                   atol=REL * scale)


# -- a QP with P(θ) against finite differences of CVXPY -------------------------------------


CLARABEL_TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12,
                  "tol_ktratio": 1e-10}


def cvxpy_solution(case, values) -> list[np.ndarray]:
    for p, v in zip(case.parameters, values):
        p.value = v
    case.problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    assert case.problem.status == cp.OPTIMAL
    return [np.array(v.value, dtype=float) for v in case.variables]


def symmetric_like(rng, value: np.ndarray, symmetric: bool) -> np.ndarray:
    d = rng.standard_normal(value.shape)
    return (d + d.T) / 2 if symmetric else d


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("batch", BATCHES)
def test_qp_matches_finite_differences(batch, point):
    """qp_optnet (P = Q a parameter, zero and nonnegative cones): jvp, vjp and jacobian along
    random directions equal central differences of CVXPY re-solves (Clarabel, tight)."""
    case, prog = compiled("qp_optnet", True, "embedding")
    assert prog.P is not None and prog.C_P is not None and not prog.C_P.is_constant
    values = values_at(case, point, batch)
    sol = prog.solve(*values, solver_args={**SCS_TIGHT, "refine": 2})
    jac = sol.jacobian()
    rng = np.random.default_rng(11 + point)
    elements = [None] if batch is None else list(range(batch))
    eps = 1e-5
    for _ in range(2):
        per_element = [[symmetric_like(rng, v if k is None else v[k], j == 0)
                        for j, v in enumerate(values)] for k in elements]
        tangents = per_element[0] if batch is None else [np.stack(t) for t in zip(*per_element)]
        jvp = sol.jvp(*tangents)
        cts = [rng.standard_normal(np.shape(v)) for v in sol.values]
        vjp = sol.vjp(*cts)
        for i, k in enumerate(elements):
            def at(a, k=k):
                return a if k is None else a[k]

            base = [at(v) for v in values]
            up = cvxpy_solution(case, [v + eps * d for v, d in zip(base, per_element[i])])
            down = cvxpy_solution(case, [v - eps * d for v, d in zip(base, per_element[i])])
            fd = [(u - d) / (2 * eps) for u, d in zip(up, down)]
            for o, f in enumerate(fd):
                assert relative_error(at(jvp[o]), f) <= 1e-5
                contracted = sum(np.tensordot(at(jac[o][j]), t, axes=t.ndim)
                                 for j, t in enumerate(per_element[i]))
                assert relative_error(contracted, f) <= 1e-5
            lhs = sum(float(np.sum(at(c) * f)) for c, f in zip(cts, fd))
            rhs = sum(float(np.sum(at(g) * t)) for g, t in zip(vjp, per_element[i]))
            assert abs(lhs - rhs) <= 1e-5 * max(1.0, abs(lhs))


# -- options, stalls and failures ------------------------------------------------------------


def test_mode_is_accepted_and_validated():
    case, prog = compiled("lp_box", False, "embedding")
    assert prog.mode == "embedding"
    _, direct = compiled("lp_box", False, "direct")
    values = values_at(case, 0, None)
    sol = direct.solve(*values, solver_args={**SCS_TIGHT, "mode": "embedding", "atol": 1e-11,
                                             "btol": 1e-11, "iter_lim": 500})
    assert sol.mode == "embedding" and sol.derivative_options["iter_lim"] == 500
    with pytest.raises(ValueError, match="embedding: atol and btol must be positive"):
        direct.solve(*values, solver_args={"mode": "embedding", "atol": 0.0})
    with pytest.raises(ValueError, match="embedding: iter_lim must be >= 1"):
        direct.solve(*values, solver_args={"mode": "embedding", "iter_lim": 0})
    with pytest.raises(ValueError, match="derivative mode must be one of .*'embedding'"):
        direct.solve(*values, solver_args={"mode": "hsde"})
    with pytest.raises(ValueError, match="mode must be one of .*embedding"):
        dpplayers.compile(case.problem, case.parameters, case.variables, mode="hsde")
    with pytest.raises(ValueError, match="needs w > 0"):
        EmbeddingOperator.at(np.zeros(prog.n + prog.m + 1), None,
                             prog.A.matrix(np.ones(prog.A.indices.size)),
                             np.zeros(prog.m), np.zeros(prog.n), prog.dual_cone)
    assert EmbeddingLSQR.from_options({"atol": 1e-9, "mode": "x"}) == EmbeddingLSQR(atol=1e-9)


def test_stalled_lsqr_falls_back():
    """An iteration limit LSQR cannot meet: the dense minimum-norm solve of M answers,
    ``fell_back`` is set, and the derivative is still the default mode's."""
    case, prog = compiled("qp_optnet", True, "direct")
    values = values_at(case, 0, None)
    ref = prog.solve(*values, solver_args=SCS_TIGHT)
    sol = prog.solve(*values, solver_args={**SCS_TIGHT, "mode": "embedding", "iter_lim": 2})
    ct = np.random.default_rng(0).standard_normal(ref.values[0].shape)
    for g, w in zip(sol.vjp(ct), ref.vjp(ct)):
        assert relative_error(g, w) <= REL
    assert sol.fell_back.all() and sol.stats[0].iterations <= 2 and sol.stats[0].converged


def test_failed_element_is_nan():
    b = cp.Parameter(name="b")
    x = cp.Variable()
    prob = cp.Problem(cp.Minimize(x + cp.square(x)), [x >= b, x <= 1])
    prog = dpplayers.compile(prob, [b], [x], mode="embedding")
    with pytest.warns(RuntimeWarning, match="1 of 2 batch elements failed"):
        sol = prog.solve(np.array([0.5, 2.0]), on_failure="nan", solver_args=SCS_TIGHT)
    (g,) = sol.vjp(np.ones((2,)))
    (t,) = sol.jvp(np.ones(2))
    assert np.isnan(g[1]) and np.isnan(t[1])
    # x = max(b, −½) with b = 0.5 active: dx/db = 1
    np.testing.assert_allclose([g[0], t[0]], [1.0, 1.0], rtol=1e-6)
    block = sol.jacobian()[0][0]  # (B,): dx/db per element
    np.testing.assert_allclose(block[0], 1.0, rtol=1e-6)
    assert np.isnan(block[1])
