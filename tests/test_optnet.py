"""OptNet QP layers: quad_form(z, Q) with a parameter Q, against the OptNet KKT gradients."""

import cvxpy as cp
import numpy as np
import pytest

import dpplayers

TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "refine": 3}


def optnet_problem(n, m, p):
    Q = cp.Parameter((n, n), PSD=True, name="Q")
    q = cp.Parameter(n, name="q")
    A = cp.Parameter((m, n), name="A")
    b = cp.Parameter(m, name="b")
    G = cp.Parameter((p, n), name="G")
    h = cp.Parameter(p, name="h")
    z = cp.Variable(n, name="z")
    eq, ineq = A @ z == b, G @ z <= h
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [eq, ineq])
    return prob, [Q, q, A, b, G, h], z, eq, ineq


def strictly_complementary_instance(rng, n, m, p, active):
    """A QP whose solution z*, multipliers ν, λ are chosen first (λ > 0 exactly on `active`)."""
    L = rng.standard_normal((n, n))
    Q = L @ L.T + np.eye(n)
    A, G = rng.standard_normal((m, n)), rng.standard_normal((p, n))
    z = rng.standard_normal(n)
    lam = np.zeros(p)
    lam[:active] = rng.uniform(0.5, 2.0, active)
    nu = rng.standard_normal(m)
    slack = np.zeros(p)
    slack[active:] = rng.uniform(0.5, 1.0, p - active)
    h = G @ z + slack
    q = -(Q @ z + A.T @ nu + G.T @ lam)
    return [Q, q, A, A @ z, G, h], z, nu, lam


def optnet_gradients(Q, A, G, h, z, nu, lam, dl_dz):
    """OptNet (Amos & Kolter 2017) backward pass from the dense KKT system.

    With d_λ from the system below, ⟨∂ℓ/∂z, dz⟩ = d_zᵀ(dGᵀλ) + d_λᵀD(λ)(dG z) + …, so
    ∇G = D(λ) d_λ zᵀ + λ d_zᵀ (D(λ) on the first term only, as qpth computes it).
    """
    n, m, p = Q.shape[0], A.shape[0], G.shape[0]
    K = np.block([
        [Q, G.T * lam, A.T],
        [G, np.diag(G @ z - h), np.zeros((p, m))],
        [A, np.zeros((m, p)), np.zeros((m, m))],
    ])
    sol = np.linalg.solve(K, -np.concatenate([dl_dz, np.zeros(p + m)]))
    dz, dlam, dnu = sol[:n], sol[n:n + p], sol[n + p:]
    return [0.5 * (np.outer(dz, z) + np.outer(z, dz)), dz, np.outer(dnu, z) + np.outer(nu, dz),
            -dnu, lam[:, None] * np.outer(dlam, z) + np.outer(lam, dz), -lam * dlam]


def rel_close(got, want, tol):
    return np.linalg.norm(got - want) <= tol * max(np.linalg.norm(want), 1e-12)


@pytest.mark.parametrize("batched", [False, True])
def test_values_and_all_six_gradients_match_optnet(batched):
    n, m, p = 8, 2, 6
    prob, params, z, eq, ineq = optnet_problem(n, m, p)
    prog = dpplayers.compile(prob, params, [z, eq.dual_variables[0], ineq.dual_variables[0]],
                             solver="CLARABEL")
    rng = np.random.default_rng(0)
    instances = [strictly_complementary_instance(rng, n, m, p, active=3) for _ in range(3 if batched else 1)]
    values = [np.stack(v) for v in zip(*[i[0] for i in instances])]
    if not batched:
        values = [v[0] for v in values]
    sol = prog.solve(*values, solver_args=TIGHT)
    dl_dz = rng.standard_normal((len(instances), n))
    grads = sol.vjp(dl_dz if batched else dl_dz[0], None, None)
    for k, (vals, z_star, nu, lam) in enumerate(instances):
        zk = sol.values[0][k] if batched else sol.values[0]
        nuk = sol.values[1][k] if batched else sol.values[1]
        lamk = sol.values[2][k] if batched else sol.values[2]
        assert rel_close(zk, z_star, 1e-8) and rel_close(lamk, lam, 1e-7)
        assert rel_close(nuk, nu, 1e-7)  # cvxpy's sign convention matches OptNet's ν
        Qv, _, Av, _, Gv, hv = vals
        want = optnet_gradients(Qv, Av, Gv, hv, z_star, nu, lam, dl_dz[k])
        for got, ref, name in zip(grads, want, ["Q", "q", "A", "b", "G", "h"]):
            g = got[k] if batched else got
            assert rel_close(g, ref, 1e-6), name
        gQ = grads[0][k] if batched else grads[0]
        np.testing.assert_allclose(gQ, gQ.T, atol=1e-12)


def test_several_quad_forms_affine_argument_and_cones():
    """Two parametric quad_forms (one of an affine expression) mixed with SOC and exp cones."""
    n = 4
    Q1 = cp.Parameter((n, n), PSD=True, name="Q1")
    Q2 = cp.Parameter((2, 2), PSD=True, name="Q2")
    c = cp.Parameter(n, name="c")
    M = np.random.default_rng(5).standard_normal((2, n))
    x = cp.Variable(n)
    obj = cp.quad_form(x, Q1) + 2 * cp.quad_form(M @ x - 1, Q2) + c @ x - cp.sum(cp.log(x + 3))
    prob = cp.Problem(cp.Minimize(obj), [cp.norm(x, 2) <= 2])
    prog = dpplayers.compile(prob, [Q1, Q2, c], [x], solver="CLARABEL")
    rng = np.random.default_rng(6)
    L1, L2 = rng.standard_normal((n, n)), rng.standard_normal((2, 2))
    values = [L1 @ L1.T + np.eye(n), L2 @ L2.T + np.eye(2), rng.standard_normal(n)]
    sol = prog.solve(*values, solver_args=TIGHT)
    # forward: cvxpy with the matrices as constants
    ref = cp.Problem(cp.Minimize(cp.quad_form(x, values[0]) + 2 * cp.quad_form(M @ x - 1, values[1])
                                 + values[2] @ x - cp.sum(cp.log(x + 3))), [cp.norm(x, 2) <= 2])
    ref.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(sol.values[0], x.value, atol=1e-6)
    # gradients: central finite differences along symmetric directions
    d1, d2 = rng.standard_normal((n, n)), rng.standard_normal((2, 2))
    dirs = [(d1 + d1.T) / 2, (d2 + d2.T) / 2, rng.standard_normal(n)]
    w = rng.standard_normal(n)
    grads = sol.vjp(w)
    eps = 1e-5
    plus = prog.solve(*[v + eps * d for v, d in zip(values, dirs)], solver_args=TIGHT).values[0]
    minus = prog.solve(*[v - eps * d for v, d in zip(values, dirs)], solver_args=TIGHT).values[0]
    fd = float(w @ (plus - minus)) / (2 * eps)
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, dirs))
    assert abs(fd - analytic) <= 1e-5 * max(1.0, abs(fd))


def test_non_symmetric_q_symmetrised_with_a_warning_naming_it():
    """Issue #17 item 14 (was: rejected): Q is used through (Q + Qᵀ)/2, with one warning."""
    prob, params, z, _, _ = optnet_problem(3, 1, 2)
    prog = dpplayers.compile(prob, params, [z])
    bad = np.array([[2.0, 1.0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    rest = np.ones(3), np.ones((1, 3)), np.ones(1), np.ones((2, 3)), np.ones(2)
    with pytest.warns(UserWarning, match="parameter 'Q' is declared PSD but its value is not"):
        got = prog.solve(bad, *rest).values[0]
    np.testing.assert_allclose(got, prog.solve((bad + bad.T) / 2, *rest).values[0], atol=1e-9)


def test_quad_form_in_constraint_is_explained():
    Q = cp.Parameter((2, 2), PSD=True, name="Q")
    x = cp.Variable(2)
    prob = cp.Problem(cp.Minimize(cp.sum(x)), [cp.quad_form(x, Q) <= 1])
    report = dpplayers.check_dpp(prob, [Q])
    assert not report.ok
    assert "only supported in the objective" in str(report)
    assert "sum_squares" in str(report)
    with pytest.raises(dpplayers.DPPError, match="only supported in the objective"):
        dpplayers.compile(prob, [Q], [x])


def test_parametric_quad_form_needs_quad_obj():
    prob, params, z, _, _ = optnet_problem(3, 1, 2)
    with pytest.raises(ValueError, match=r"needs quad_obj=True .*sum_squares\(L @ x\)"):
        dpplayers.compile(prob, params, [z], quad_obj=False)


def test_quad_obj_false_reformulates_with_cones():
    """A constant-matrix QP gives the same answer and gradient through cones (no P)."""
    n = 4
    q = cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x) + q @ x), [x >= -0.3])
    with_P = dpplayers.compile(prob, [q], [x], solver="CLARABEL")
    cones = dpplayers.compile(prob, [q], [x], solver="CLARABEL", quad_obj=False)
    assert with_P.P is not None and cones.P is None and cones.cones.soc
    qv = np.array([1.0, -1.0, 0.2, 0.9])
    a, b = with_P.solve(qv, solver_args=TIGHT), cones.solve(qv, solver_args=TIGHT)
    np.testing.assert_allclose(a.values[0], b.values[0], atol=1e-8)
    np.testing.assert_allclose(a.vjp(np.ones(n))[0], b.vjp(np.ones(n))[0], atol=1e-7)
