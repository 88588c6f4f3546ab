# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Paths: a lasso regularisation path and a portfolio's risk-aversion path
#
# `dpplayers.sensitivity.path` solves a grid of values of one parameter as **one batch**,
# returns the exact tangent dx*/dλ at every grid point (one jvp on the batch), and marks
# the intervals where the active set changes: the knots of the lasso path, the risk
# aversions at which an asset enters or leaves a portfolio. Between knots the path is
# smooth and the tangents are exact; across a knot they jump. `QUICK=1` uses small grids.

# %%
import os

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import lasso_path

import dpplayers
from dpplayers.sensitivity import path, validate

QUICK = os.environ.get("QUICK") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72})

# %% [markdown]
# ## Lasso on the diabetes data
#
# minimise ‖y − Xβ‖² + λ‖β‖₁ (scikit-learn's `Lasso` with α = λ / 2n).

# %%
X_data, y_data = load_diabetes(return_X_y=True)
X_data = (X_data - X_data.mean(0)) / X_data.std(0)
y_data = y_data - y_data.mean()
n, d = X_data.shape
lam = cp.Parameter(nonneg=True, name="lam")
beta = cp.Variable(d, name="beta")
lasso = cp.Problem(cp.Minimize(cp.sum_squares(y_data - X_data @ beta) + lam * cp.norm1(beta)))
prog = dpplayers.compile(lasso, parameters=[lam], variables=[beta], solver="CLARABEL")
lam_max = 2 * np.abs(X_data.T @ y_data).max()  # every coefficient is 0 above it
grid = np.geomspace(1.2 * lam_max, 1e-3 * lam_max, 15 if QUICK else 60)
lasso_result = path(prog, lam, grid)
print(f"{grid.size} points solved as one batch; active set changes in "
      f"{len(lasso_result.breakpoints)} intervals")

# %%
_, sk_coefs, _ = lasso_path(X_data, y_data, alphas=grid / (2 * n), tol=1e-12, max_iter=100_000)
error = np.abs(lasso_result.values[0] - sk_coefs.T).max()
print(f"largest difference from scikit-learn's lasso_path: {error:.1e}")
assert error < 1e-4
support = np.abs(sk_coefs.T) > 1e-6
assert np.array_equal(lasso_result.changes, (support[1:] != support[:-1]).any(axis=1))

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
lasso_result.plot(ax=ax, tangents=True)
ax.set_xscale("log")
ax.set_title("lasso path: coefficients, exact tangents (short segments), knots (dotted)")

# %% [markdown]
# Between knots the lasso path is piecewise linear in λ, so a first-order step from one
# grid point predicts the next exactly unless a knot lies between them:

# %%
step = np.diff(grid)
predicted = lasso_result.values[0][:-1] + step[:, None] * lasso_result.tangents[0][:-1]
miss = np.abs(predicted - lasso_result.values[0][1:]).max(axis=1)
print("largest miss without a knot:", miss[~lasso_result.changes].max())
assert miss[~lasso_result.changes].max() < 1e-4 * np.abs(lasso_result.values[0]).max()
assert miss[lasso_result.changes].max() > 1e-3

# %% [markdown]
# ## A long-only portfolio along risk aversion γ
#
# maximise μᵀx − γ xᵀΣx subject to 1ᵀx = 1, x ≥ 0. With μ a parameter too, the same
# compiled program answers "how do the weights react to the expected returns".

# %%
rng = np.random.default_rng(0)
k = 8
F = rng.normal(size=(k, 3))
Sigma = F @ F.T / 3 + np.diag(rng.uniform(0.05, 0.2, size=k))
mu_data = rng.uniform(0.02, 0.3, size=k)
mu = cp.Parameter(k, name="mu")
gamma = cp.Parameter(nonneg=True, name="gamma")
x = cp.Variable(k, name="x")
budget = cp.sum(x) == 1
portfolio = cp.Problem(cp.Maximize(mu @ x - gamma * cp.quad_form(x, Sigma)), [budget, x >= 0])
pprog = dpplayers.compile(portfolio, parameters=[mu, gamma], variables=[x], solver="CLARABEL")
gammas = np.geomspace(0.05, 20, 12 if QUICK else 50)
folio = path(pprog, gamma, gammas, values={mu: mu_data})
assert np.allclose(folio.values[0].sum(axis=1), 1, atol=1e-8)
print("assets enter or leave in", folio.breakpoints)

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.stackplot(gammas, folio.values[0].T, labels=[f"asset {i}" for i in range(k)])
for lo, hi in folio.breakpoints:
    ax.axvline(np.sqrt(lo * hi), color="k", linestyle=":", linewidth=0.8)
ax.set_xscale("log")
ax.set_xlabel("risk aversion γ")
ax.set_ylabel("weight")
ax.legend(fontsize=7, ncol=2, loc="upper right")
ax.set_title("portfolio weights along γ; dotted: an asset enters or leaves")

# %% [markdown]
# Tangents against central differences of re-solves at a few grid points:

# %%
check = [0, len(gammas) // 2, len(gammas) - 1]
h = 1e-6
for j in check:
    sols = [pprog.solve(mu_data, g, solver_args={"eps": 1e-10}).values[0]
            for g in (gammas[j] * (1 + h), gammas[j] * (1 - h))]
    fd = (sols[0] - sols[1]) / (2 * h * gammas[j])
    assert np.allclose(folio.tangents[0][j], fd, atol=1e-4), (j, folio.tangents[0][j], fd)
print("tangents match central differences at", check)

# %% [markdown]
# How the weights at a moderate γ react to each expected return (labelled Jacobian), and a
# check of first-order predictions against re-solves.

# %%
at = len(gammas) // 2
sol = pprog.solve(mu_data, gammas[at], solver_args={"eps": 1e-10})
sens = sol.sensitivity(of=x, wrt=mu)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
sens.heatmap(ax=axes[0])
axes[0].set_title(f"dx/dμ at γ = {gammas[at]:.2f}")
report = validate(pprog, {mu: mu_data, gamma: gammas[at]}, wrt=[mu], steps=(1e-2, 1e-3, 1e-4))
report.plot(ax=axes[1])
axes[1].set_title("validate: predicted vs re-solved changes (scaled by 1/h)")
print(report.to_frame()[["step", "relative_error", "central_error", "noise_floor",
                         "active_set_changed"]])
assert report.best_error < 1e-4
