"""dpplayers.sensitivity against oracles it did not write: statsmodels' regression
influence (OLS), scikit-learn re-fits (lasso, logistic regression, linear SVM), CVXPY's own
re-solves (central finite differences) and the re-solves ``validate`` makes on every cone.

Every program is compiled with parameter values unset and checked at two parameter points.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers import ParameterError, VariableError
from dpplayers.sensitivity import data_sensitivity, influence, path, sensitivity, validate

pd = pytest.importorskip("pandas")
sm = pytest.importorskip("statsmodels.api")
linear_model = pytest.importorskip("sklearn.linear_model")
svm = pytest.importorskip("sklearn.svm")
from statsmodels.stats.outliers_influence import OLSInfluence

SEEDS = (0, 1)


def _drop(i: int, n: int) -> np.ndarray:
    return np.arange(n) != i


# -- least squares: statsmodels' OLSInfluence ---------------------------------------------


def _ols(n: int, d: int):
    w = cp.Parameter(n, nonneg=True, name="w")
    y = cp.Parameter(n, name="y")
    X = cp.Parameter((n, d), name="X")
    beta, r = cp.Variable(d, name="beta"), cp.Variable(n, name="r")
    problem = cp.Problem(cp.Minimize(w @ cp.square(r)), [r == y - X @ beta])
    return problem, w, y, X, beta


@pytest.mark.parametrize("seed", SEEDS)
def test_ols_exact_loo_and_leverage_match_statsmodels(seed):
    n, d = 30, 3
    problem, w, y, X, beta = _ols(n, d)
    prog = dpplayers.compile(problem, parameters=[w, y, X], variables=[beta], solver="SCS")
    rng = np.random.default_rng(seed)
    Xv = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))])
    yv = Xv @ rng.normal(size=d) + 0.5 * rng.standard_t(3, size=n)
    inf = influence(prog, weights=w, coefficients=[beta], values={w: np.ones(n), y: yv, X: Xv},
                    exact=True, features=X, response=y)
    oracle = OLSInfluence(sm.OLS(yv, Xv).fit())
    assert inf.loo_solution.batch == n  # every refit returned
    np.testing.assert_allclose(inf.dfbeta, oracle.dfbeta, rtol=0, atol=1e-8)
    np.testing.assert_allclose(inf.leverage, oracle.hat_matrix_diag, rtol=0, atol=1e-8)
    np.testing.assert_allclose(inf.cooks_distance, oracle.cooks_distance[0], rtol=1e-6, atol=1e-10)
    assert not inf.active_set_changed.any()  # least squares has no inequality
    table = inf.summary()
    assert list(table.columns[:d]) == [f"dfb_beta[{k}]" for k in range(d)]
    np.testing.assert_allclose(table["leverage"], oracle.hat_matrix_diag, atol=1e-8)


def test_ols_first_order_is_the_one_step_approximation():
    """For least squares, −wᵢ ∂β/∂wᵢ is the classical one-step change (1 − hᵢ) times the
    exact one: eᵢ (XᵀX)⁻¹xᵢ versus eᵢ (XᵀX)⁻¹xᵢ / (1 − hᵢ)."""
    n, d = 25, 2
    problem, w, y, X, beta = _ols(n, d)
    rng = np.random.default_rng(3)
    Xv, yv = rng.normal(size=(n, d)), rng.normal(size=n)
    inf = influence(problem, weights=w, coefficients=[beta],
                    values={w: np.ones(n), y: yv, X: Xv}, exact=True, features=X, response=y)
    oracle = OLSInfluence(sm.OLS(yv, Xv).fit())
    h = oracle.hat_matrix_diag
    np.testing.assert_allclose(inf.predicted_change, inf.exact_change * (1 - h)[:, None],
                               atol=1e-8)


# -- lasso, logistic regression, linear SVM: scikit-learn re-fits ----------------------------


def _assert_first_order(inf, columns=slice(None), floor=1e-9):
    """Predictions track exact refits where the active set stays put."""
    same = ~inf.active_set_changed
    pred = inf.predicted_change[same][:, columns].ravel()
    exact = inf.exact_change[same][:, columns].ravel()
    if np.abs(exact).max() < floor:  # nothing moves there (e.g. an SVM's non-support vectors)
        np.testing.assert_allclose(pred, 0.0, atol=floor)
    else:
        assert np.corrcoef(pred, exact)[0, 1] >= 0.99


@pytest.mark.parametrize("lam", [8.0, 30.0])
def test_lasso_exact_loo_matches_sklearn(lam):
    n, d = 40, 5
    rng = np.random.default_rng(int(lam))
    Xv = rng.normal(size=(n, d))
    yv = Xv @ np.array([1.5, -2.0, 0.0, 0.0, 0.4]) + 0.5 * rng.normal(size=n)
    w, reg = cp.Parameter(n, nonneg=True, name="w"), cp.Parameter(nonneg=True, name="lam")
    beta = cp.Variable(d, name="beta")
    problem = cp.Problem(cp.Minimize(w @ cp.square(yv - Xv @ beta) + reg * cp.norm1(beta)))
    inf = influence(problem, weights=w, coefficients=beta, values={w: np.ones(n), reg: lam},
                    exact=True)
    # sklearn: 1/(2m)‖y − Xβ‖² + α‖β‖₁ over m points, so α = λ / (2m)
    refits = np.array([linear_model.Lasso(alpha=lam / (2 * (n - 1)), fit_intercept=False,
                                          tol=1e-14, max_iter=100_000)
                       .fit(Xv[_drop(i, n)], yv[_drop(i, n)]).coef_ for i in range(n)])
    full = linear_model.Lasso(alpha=lam / (2 * n), fit_intercept=False, tol=1e-14,
                              max_iter=100_000).fit(Xv, yv).coef_
    np.testing.assert_allclose(inf.coefficients, full, atol=1e-6)
    same_support = ((np.abs(refits) > 1e-9) == (np.abs(full) > 1e-9)).all(axis=1)
    assert same_support.any()
    np.testing.assert_allclose((inf.coefficients + inf.exact_change)[same_support],
                               refits[same_support], atol=1e-6)
    # flagged exactly where scikit-learn's refit has another support (at λ = 30 one point)
    np.testing.assert_array_equal(inf.active_set_changed, ~same_support)
    _assert_first_order(inf)


def _classification(n: int, d: int, seed: int, noise: float):
    rng = np.random.default_rng(seed)
    Xv = rng.normal(size=(n, d))
    yv = np.where(Xv @ np.linspace(1.0, -1.0, d) + noise * rng.normal(size=n) > 0, 1.0, -1.0)
    return Xv, yv


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_logistic_exact_loo_matches_sklearn(lam):
    n, d = 40, 3
    Xv, yv = _classification(n, d, int(10 * lam), noise=0.8)
    w, reg = cp.Parameter(n, nonneg=True, name="w"), cp.Parameter(nonneg=True, name="lam")
    beta = cp.Variable(d, name="beta")
    loss = w @ cp.logistic(-cp.multiply(yv, Xv @ beta))
    problem = cp.Problem(cp.Minimize(loss + reg / 2 * cp.sum_squares(beta)))
    inf = influence(problem, weights=w, coefficients=[beta], values={w: np.ones(n), reg: lam},
                    exact=True)
    # sklearn: ½‖β‖² + C Σ log(1 + exp(−yᵢ xᵢβ)), the same minimiser for C = 1/λ
    def fit(rows):
        return linear_model.LogisticRegression(C=1 / lam, fit_intercept=False, tol=1e-14,
                                               max_iter=10_000, solver="newton-cholesky"
                                               ).fit(Xv[rows], yv[rows]).coef_[0]
    refits = np.array([fit(_drop(i, n)) for i in range(n)])
    np.testing.assert_allclose(inf.coefficients + inf.exact_change, refits, atol=1e-6)
    assert not inf.active_set_changed.any()  # a smooth loss: no active set
    _assert_first_order(inf)


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_linear_svm_exact_loo_matches_sklearn(lam):
    n, d = 40, 2
    Xv, yv = _classification(n, d, int(10 * lam) + 1, noise=0.3)
    w, reg = cp.Parameter(n, nonneg=True, name="w"), cp.Parameter(nonneg=True, name="lam")
    beta, b, xi = cp.Variable(d, name="beta"), cp.Variable(name="b"), cp.Variable(n)
    problem = cp.Problem(cp.Minimize(reg / 2 * cp.sum_squares(beta) + w @ xi),
                         [xi >= 0, xi >= 1 - cp.multiply(yv, Xv @ beta + b)])
    inf = influence(problem, weights=w, coefficients=[beta, b],
                    values={w: np.ones(n), reg: lam}, exact=True)
    # sklearn's SVC: ½‖β‖² + C Σ hinge, the same minimiser for C = 1/λ (intercept unpenalised)
    def fit(rows):
        model = svm.SVC(kernel="linear", C=1 / lam, tol=1e-12).fit(Xv[rows], yv[rows])
        return np.r_[model.coef_[0], model.intercept_]
    def objective(theta, rows):
        margins = yv[rows] * (Xv[rows] @ theta[:d] + theta[d])
        return lam / 2 * theta[:d] @ theta[:d] + np.maximum(0.0, 1 - margins).sum()

    def unique_intercept(theta, rows, step=1e-4):
        """b is unique iff moving it either way costs (else any b of an interval is optimal)."""
        return all(objective(theta + np.r_[np.zeros(d), s], rows) > objective(theta, rows) + 1e-9
                   for s in (step, -step))

    ours = inf.coefficients + np.vstack([np.zeros(d + 1), inf.exact_change])
    for i, rows in enumerate([np.arange(n)] + [_drop(k, n) for k in range(n)]):
        ref = fit(rows)
        np.testing.assert_allclose(ours[i][:d], ref[:d], atol=1e-6)
        assert objective(ours[i], rows) <= objective(ref, rows) + 1e-7
        if unique_intercept(ref, rows):
            assert abs(ours[i][d] - ref[d]) <= 1e-6
    # removing a non-support vector changes nothing; every support vector is flagged
    margins = yv * (Xv @ inf.coefficients[:d] + inf.coefficients[d])
    assert inf.active_set_changed[margins < 1 - 1e-6].all()
    assert not inf.active_set_changed[margins > 1 + 1e-6].any()
    _assert_first_order(inf, columns=slice(0, d))  # b may be any point of an interval


# -- labelled sensitivities: central differences through CVXPY's own solve --------------------


def _qp():
    """A QP with a parametric objective and constraints: three active-set regimes."""
    q, G, h = cp.Parameter(4, name="q"), cp.Parameter((3, 4), name="G"), cp.Parameter(3, name="h")
    x = cp.Variable(4, name="x")
    con = G @ x <= h
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [con])
    return problem, (q, G, h), x, con


def _qp_values(seed: int):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=4), rng.normal(size=(3, 4)), rng.uniform(-0.5, 0.5, size=3)]


def _cvxpy_solution(problem, params, values, outputs):
    for p, v in zip(params, values):
        p.value = v
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return np.concatenate([np.ravel(o.value) for o in outputs])


def _central_difference(problem, params, values, outputs, j, eps=1e-6):
    """d outputs / d params[j], column by column, by CVXPY re-solves."""
    cols = []
    for e in np.ndindex(values[j].shape):
        plus = [v.copy() for v in values]
        minus = [v.copy() for v in values]
        plus[j][e] += eps
        minus[j][e] -= eps
        cols.append((_cvxpy_solution(problem, params, plus, outputs)
                     - _cvxpy_solution(problem, params, minus, outputs)) / (2 * eps))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("seed", SEEDS)
def test_labelled_blocks_match_cvxpy_central_differences(seed):
    problem, params, x, con = _qp()
    lam = con.dual_variables[0]
    prog = dpplayers.compile(problem, parameters=list(params), variables=[x, lam],
                             solver="CLARABEL")
    values = _qp_values(seed)
    sol = prog.solve(*values, solver_args={"eps": 1e-12})
    sens = sol.sensitivity(of=[x, lam], wrt=["G", params[2]])
    assert sens.outputs == ("x", sens.outputs[1]) and "dual" in sens.outputs[1]
    assert sens.parameters == ("G", "h")
    for j, name in ((1, "G"), (2, "h")):
        fd = _central_difference(problem, params, values, [x, lam], j)
        ours = np.concatenate([sens.block("x", name).reshape(4, -1),
                               sens.block(sens.outputs[1], name).reshape(3, -1)])
        np.testing.assert_allclose(ours, fd, atol=1e-5)
    assert sens.block("x", "G").shape == (4, 3, 4)


@pytest.mark.parametrize("seed", SEEDS)
def test_reverse_forward_and_jacobian_routes_agree(seed, monkeypatch):
    problem, params, x, _con = _qp()
    prog = dpplayers.compile(problem, parameters=list(params), variables=[x])
    values = _qp_values(seed)
    sol = prog.solve(*[np.stack([v, v * 1.1]) for v in values], solver_args={"eps": 1e-10})
    routes = {}
    from dpplayers._labels import blocks as _labelled

    monkeypatch.setattr(_labelled, "JACOBIAN_SLACK", 0)  # force vjp rows / jvp columns
    routes["reverse"] = sensitivity(sol, of=x, wrt="G")   # 4 outputs < 12 entries
    routes["forward"] = sensitivity(sol, of=x, wrt="h")   # 3 entries < 4 outputs
    monkeypatch.setattr(_labelled, "JACOBIAN_SLACK", 100)
    full = sensitivity(sol, of=x, wrt=["G", "h"])
    assert {r.method for r in routes.values()} == {"reverse", "forward"}
    assert full.method == "jacobian" and full.batch == 2
    np.testing.assert_allclose(routes["reverse"].blocks[0][0], full.blocks[0][0], atol=1e-12)
    np.testing.assert_allclose(routes["forward"].blocks[0][0], full.blocks[0][1], atol=1e-12)
    # per element equals an unbatched solve at that element's values
    one = prog.solve(*[v * 1.1 for v in values], solver_args={"eps": 1e-10}).sensitivity(x, "h")
    np.testing.assert_allclose(full.block("x", "h")[1], one.block("x", "h"), atol=1e-7)


def test_frame_top_and_plots():
    problem, params, x, _con = _qp()
    prog = dpplayers.compile(problem, parameters=list(params), variables=[x])
    sens = prog.solve(*_qp_values(0)).sensitivity(of=x, wrt=["q", "h"])
    frame = sens.to_frame()
    assert len(frame) == 4 * 4 + 4 * 3
    row = frame[(frame.of == "x[2]") & (frame.wrt == "h[1]")]
    assert row["value"].item() == sens.block("x", "h")[2, 1]
    top = sens.top(5)
    assert len(top) == 5 and top["value"].abs().is_monotonic_decreasing
    assert abs(top["value"].iloc[0]) == np.abs(frame["value"]).max()
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    assert sens.heatmap(wrt="h").get_ylabel() is not None
    assert len(sens.tornado(k=6).patches) == 6


def test_xarray_export():
    pytest.importorskip("xarray")
    problem, params, x, _con = _qp()
    prog = dpplayers.compile(problem, parameters=list(params), variables=[x])
    sens = prog.solve(*_qp_values(1)).sensitivity(of=x, wrt="G")
    data = sens.to_xarray()["dx/dG"]
    assert data.dims == ("x_0", "G_0", "G_1")
    np.testing.assert_array_equal(data.values, sens.block("x", "G"))


def test_missing_plotting_extra_is_named(monkeypatch):
    from dpplayers._labels import optional as _optional

    real = _optional.importlib.import_module

    def refuse(name):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(_optional.importlib, "import_module", refuse)
    problem, params, _x, _con = _qp()
    sens = dpplayers.compile(problem, parameters=list(params)).solve(*_qp_values(0)).sensitivity()
    with pytest.raises(ImportError, match=r"dpplayers\[sensitivity\]"):
        sens.tornado()


# -- data sensitivity ------------------------------------------------------------------------


def _logistic_ridge_oracle(Z, iterations=50):
    """β minimising Σ log(1 + exp(−zᵢβ)) + ‖β‖² by Newton's method, and ∂β/∂Z[i, k] from
    the implicit function theorem on the gradient g = −Σ σ(−mᵢ) zᵢ + 2β (mᵢ = zᵢβ):
    H dβ = −∂g/∂Z[i, k], H = Σ σ'(mᵢ) zᵢzᵢᵀ + 2I, ∂g/∂Z[i, k] = −σ(−mᵢ) eₖ + σ'(mᵢ) βₖ zᵢ."""
    n, d = Z.shape
    sigma = lambda t: 1 / (1 + np.exp(-t))
    beta = np.zeros(d)
    for _ in range(iterations):
        m = Z @ beta
        g = -Z.T @ sigma(-m) + 2 * beta
        H = (Z * (sigma(m) * sigma(-m))[:, None]).T @ Z + 2 * np.eye(d)
        beta = beta - np.linalg.solve(H, g)
    m = Z @ beta
    slope = sigma(m) * sigma(-m)
    H = (Z * slope[:, None]).T @ Z + 2 * np.eye(d)
    arrows = np.empty((n, d, d))
    for i in range(n):
        for k in range(d):
            dg = -sigma(-m[i]) * np.eye(d)[k] + slope[i] * beta[k] * Z[i]
            arrows[i, k] = -np.linalg.solve(H, dg)
    return beta, arrows


@pytest.mark.parametrize("seed", SEEDS)
def test_data_sensitivity_matches_the_implicit_function_theorem(seed):
    n, d = 12, 2
    Xv, yv = _classification(n, d, seed, noise=1.0)
    Z = cp.Parameter((n, d), name="Z")  # rows yᵢ xᵢ: the margins are Z β
    beta, u = cp.Variable(d, name="beta"), cp.Variable(n)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-u)) + cp.sum_squares(beta)),
                         [u == Z @ beta])
    prog = dpplayers.compile(problem, parameters=[Z], variables=[beta], solver="CLARABEL")
    Zv = yv[:, None] * Xv
    sol = prog.solve(Zv, solver_args={"eps": 1e-10, "refine": 2})
    arrows = data_sensitivity(sol, Z, beta)
    beta_star, expected = _logistic_ridge_oracle(Zv)
    np.testing.assert_allclose(sol.values[0], beta_star, atol=1e-8)
    assert arrows.shape == (n, d, d)
    np.testing.assert_allclose(arrows, expected, atol=1e-7)


# -- validate: every cone ------------------------------------------------------------------


def _lp():
    """The vertex A x = b is optimal for c = −Aᵀμ, μ > 0: x* = A⁻¹b moves with b."""
    c, b = cp.Parameter(3, name="c"), cp.Parameter(3, name="b")
    x = cp.Variable(3, name="x")
    A = np.array([[2.0, 0.5, 0.0], [0.3, 1.0, 0.2], [0.0, -0.4, 1.5]])
    problem = cp.Problem(cp.Minimize(c @ x), [A @ x <= b, x >= -10])
    return problem, lambda rng: {c: -A.T @ rng.uniform(0.5, 2.0, size=3),
                                 b: rng.uniform(0.5, 1.5, size=3)}


def _qp_case():
    problem, (q, G, h), _x, _con = _qp()
    return problem, lambda rng: dict(zip((q, G, h), _qp_values(int(rng.integers(100)))))


def _socp():
    a, t = cp.Parameter(3, name="a"), cp.Parameter(pos=True, name="t")
    x = cp.Variable(3, name="x")
    problem = cp.Problem(cp.Minimize(a @ x), [cp.norm(x - 1, 2) <= t])
    return problem, lambda rng: {a: rng.normal(size=3), t: rng.uniform(0.5, 2.0)}


def _exp():
    a = cp.Parameter(3, name="a")
    x = cp.Variable(3, name="x")
    problem = cp.Problem(cp.Minimize(cp.log_sum_exp(x) - a @ x + cp.sum_squares(x) / 2))
    return problem, lambda rng: {a: rng.normal(size=3)}


def _psd():
    """X* = Π_PSD(−C): rank 2 of 3 for C with eigenvalues of both signs."""
    C = cp.Parameter((3, 3), symmetric=True, name="C")
    X = cp.Variable((3, 3), symmetric=True, name="X")
    problem = cp.Problem(cp.Minimize(cp.trace(C @ X) + cp.sum_squares(X) / 2), [X >> 0])
    def values(rng):
        Q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        return {C: Q @ np.diag([-1.5, -0.5, 0.8]) @ Q.T}
    return problem, values


@pytest.mark.parametrize("case", [_lp, _qp_case, _socp, _exp, _psd],
                         ids=["LP", "QP", "SOCP", "exp", "PSD"])
@pytest.mark.parametrize("seed", SEEDS)
def test_validate_every_cone(case, seed):
    problem, values = case()
    prog = dpplayers.compile(problem, solver="CLARABEL")
    report = validate(prog, values(np.random.default_rng(seed)), steps=(1e-3, 1e-4, 1e-5))
    assert np.linalg.norm(report.tangent) > 1e-3  # the outputs do move
    assert report.relative_error[-1] <= 1e-4, report.to_frame()  # one-sided, smallest step
    assert (report.central_error <= 1e-4).all(), report.to_frame()
    assert (report.correlation >= 0.999).all() or report.tangent.size == 1
    assert (report.noise_floor <= 1e-5).all()  # the re-solves can resolve that error
    assert not report.active_set_changed.any()


def test_validate_sees_a_kink():
    """A step across an active-set change makes the first-order prediction wrong, and
    validate says so (the LP vertex moves)."""
    t = cp.Parameter(name="t")
    x = cp.Variable(name="x")
    problem = cp.Problem(cp.Minimize(cp.square(x - t)), [x <= 0])
    report = validate(dpplayers.compile(problem), {t: -1e-3}, steps=(10.0, 1e-4))
    assert report.active_set_changed[0] and report.relative_error[0] > 0.5
    assert not report.active_set_changed[1] and report.relative_error[1] < 1e-4


# -- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_lasso_path_matches_sklearn_with_tangents_and_knots(seed):
    n, d = 30, 4
    rng = np.random.default_rng(seed)
    Xv = rng.normal(size=(n, d))
    yv = Xv @ np.array([2.0, -1.0, 0.5, 0.0]) + 0.3 * rng.normal(size=n)
    lam = cp.Parameter(nonneg=True, name="lam")
    beta = cp.Variable(d, name="beta")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(yv - Xv @ beta) + lam * cp.norm1(beta)))
    prog = dpplayers.compile(problem, parameters=[lam], variables=[beta], solver="CLARABEL")
    # descending, as sklearn orders it; the first point above the last knot 2‖Xᵀy‖∞
    grid = np.geomspace(3 * np.abs(Xv.T @ yv).max(), 0.5, 12)
    result = path(prog, lam, grid, solver_args={"eps": 1e-12})
    assert result.solution.batch == grid.size  # one batch
    _, coefs, _ = linear_model.lasso_path(Xv, yv, alphas=grid / (2 * n), tol=1e-14,
                                          max_iter=100_000)
    np.testing.assert_allclose(result.values[0], coefs.T, atol=1e-6)
    # tangents against central differences of sklearn's own path
    eps = 1e-5
    _, up, _ = linear_model.lasso_path(Xv, yv, alphas=(grid + eps) / (2 * n), tol=1e-15,
                                       max_iter=100_000)
    _, down, _ = linear_model.lasso_path(Xv, yv, alphas=(grid - eps) / (2 * n), tol=1e-15,
                                         max_iter=100_000)
    np.testing.assert_allclose(result.tangents[0], (up - down).T / (2 * eps), atol=1e-4)
    support = np.abs(coefs.T) > 1e-8
    np.testing.assert_array_equal(result.changes, (support[1:] != support[:-1]).any(axis=1))
    assert result.breakpoints and len(result.to_frame()) == grid.size * d


# -- bad input: clear errors in the user's words ----------------------------------------------


def test_wrt_not_a_parameter_of_the_program():
    problem, params, x, _con = _qp()
    sol = dpplayers.compile(problem, parameters=list(params), variables=[x]).solve(*_qp_values(0))
    stranger = cp.Parameter(2, name="stranger")
    with pytest.raises(ParameterError, match="'stranger'.*not a parameter of the program.*q, G, h"):
        sol.sensitivity(of=x, wrt=stranger)
    with pytest.raises(ParameterError, match="no parameter named 'Q'"):
        sol.sensitivity(of=x, wrt="Q")


def test_of_not_requested_at_compile_time():
    problem, params, x, con = _qp()
    sol = dpplayers.compile(problem, parameters=list(params), variables=[x]).solve(*_qp_values(0))
    with pytest.raises(VariableError, match="dual variable of .*not requested at compile time"):
        sol.sensitivity(of=con.dual_variables[0])
    other = cp.Variable(2, name="z")
    with pytest.raises(VariableError, match="'z'.*not requested at compile time.*'x'"):
        sol.sensitivity(of=other)


def test_weights_that_do_not_enter_the_problem():
    n = 5
    problem, w, y, X, beta = _ols(n, 2)
    loose = cp.Parameter(n, nonneg=True, name="sample_weight")
    with pytest.raises(ParameterError, match="'sample_weight'.*does not enter the problem"):
        influence(problem, weights=loose, coefficients=[beta])
    with pytest.raises(ParameterError, match="parameter 'X' must be a vector"):
        influence(problem, weights=X, coefficients=[beta],
                  values={w: np.ones(n), y: np.ones(n), X: np.ones((n, 2))})
    with pytest.raises(VariableError, match="no output named 'r' was requested"):
        prog = dpplayers.compile(problem, parameters=[w, y, X], variables=[beta])
        influence(prog, weights=w, coefficients=["r"], values=[np.ones(n), np.ones(n),
                                                               np.ones((n, 2))])


def test_missing_values_are_named():
    problem, w, _y, X, beta = _ols(4, 2)
    with pytest.raises(ParameterError, match="no value for parameter.*y"):
        influence(problem, weights=w, coefficients=[beta], values={w: np.ones(4),
                                                                   X: np.ones((4, 2))})


def test_unnamed_leaves_resolve_by_shape_or_are_refused():
    a, b = cp.Parameter(2), cp.Parameter()
    x = cp.Variable(2)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - a) + b * cp.sum(x)))
    for order in ([a, b], [b, a]):
        prog = dpplayers.compile(problem, parameters=order)
        rng = np.random.default_rng(len(order))
        sol = prog.solve(*[rng.normal(size=p.shape) for p in order])
        sens = sol.sensitivity(of=x, wrt=[a, b])  # x = a − b/2
        np.testing.assert_allclose(sens.blocks[0][0], np.eye(2), atol=1e-6)
        np.testing.assert_allclose(sens.blocks[0][1], -np.ones(2) / 2, atol=1e-6)
    c = cp.Parameter(2)
    twin = cp.Problem(cp.Minimize(cp.sum_squares(x - a) + c @ x))
    sol = dpplayers.compile(twin, parameters=[c, a]).solve(np.zeros(2), np.ones(2))
    with pytest.raises(ParameterError, match="cannot tell which compiled parameter"):
        sol.sensitivity(of=x, wrt=[a])


def test_influence_validation_and_path_plots():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    n = 8
    problem, w, y, X, beta = _ols(n, 2)
    rng = np.random.default_rng(5)
    values = {w: np.ones(n), y: rng.normal(size=n), X: rng.normal(size=(n, 2))}
    inf = influence(problem, weights=w, coefficients=[beta], values=values, exact=True)
    assert len(inf.plot().collections) >= 1
    with pytest.raises(ValueError, match="exact=True"):
        influence(problem, weights=w, coefficients=[beta], values=values).plot()
    prog = dpplayers.compile(problem, parameters=[w, y, X], variables=[beta])
    assert validate(prog, values, wrt=[y]).plot().get_xlabel() == "first-order prediction"
    lam = cp.Parameter(nonneg=True, name="lam")
    x = cp.Variable(2, name="x")
    box = cp.Problem(cp.Minimize(cp.sum_squares(x - np.array([1.0, -2.0])) + lam * cp.norm1(x)))
    result = path(box, lam, np.linspace(0.5, 5.0, 6))
    np.testing.assert_allclose(result.values[0][:, 0], np.maximum(1 - result.grid / 2, 0),
                               atol=1e-7)  # soft thresholding
    assert len(result.plot(tangents=True).lines) > 2


def test_twin_constraints_need_a_position():
    h, x = cp.Parameter(2, name="h"), cp.Variable(2, name="x")
    first, second = x <= h, x <= h  # the same text: their duals share a name
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x) - cp.sum(x)), [first, second])
    prog = dpplayers.compile(problem, variables=[x, first.dual_variables[0],
                                                 second.dual_variables[0]])
    sol = prog.solve(np.zeros(2))
    with pytest.raises(VariableError, match=r"cannot tell which requested output .*x <= h"):
        sol.sensitivity(of=first.dual_variables[0])
    assert sol.sensitivity(of=2, wrt=h).blocks[0][0].shape == (2, 2)
