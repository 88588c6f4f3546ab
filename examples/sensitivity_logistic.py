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
# # Which training points does a logistic regression lean on?
#
# A fitted model is the solution of a convex problem, so its sensitivity to the data is a
# derivative of that solution. With a weight per training point, `w = cp.Parameter(N)`,
# `dpplayers.influence` gives, for every point at once:
#
# - the **infinitesimal influence** ∂θ/∂wᵢ (one factorisation at the fit),
# - the **leave-one-out change** it predicts, −wᵢ ∂θ/∂wᵢ,
# - the **exact** leave-one-out change (`exact=True`: all N refits together, by chord
#   iterations from the full fit's factorisation, each certified by its own KKT residual),
#
# and `data_sensitivity` gives ∂θ/∂xᵢ, how moving a point moves the fit.
# `QUICK=1` runs a smaller problem (CI).

# %%
import os

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np

import dpplayers
from dpplayers.sensitivity import data_sensitivity

QUICK = os.environ.get("QUICK") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72})
rng = np.random.default_rng(4)
N = 30 if QUICK else 80
X_data = rng.normal(size=(N, 2)) + np.array([0.3, 0.0])
y_data = np.where(X_data @ np.array([1.5, -1.0]) + 0.2 + 0.9 * rng.normal(size=N) > 0, 1.0, -1.0)

# %% [markdown]
# The loss is written with the weights multiplying a parameter-free term: the margins
# `u = y ∘ (X β + b)` are variables, so the data matrix `X` can be a parameter too (DPP).

# %%
w = cp.Parameter(N, nonneg=True, name="w")
X = cp.Parameter((N, 2), name="X")
beta, b, u = cp.Variable(2, name="beta"), cp.Variable(name="b"), cp.Variable(N, name="u")
lam = 0.5
problem = cp.Problem(cp.Minimize(w @ cp.logistic(-u) + lam / 2 * cp.sum_squares(beta)),
                     [u == cp.multiply(y_data, X @ beta + b)])
prog = dpplayers.compile(problem, parameters=[w, X], variables=[beta, b], solver="SCS")
values = {w: np.ones(N), X: X_data}
inf = dpplayers.influence(prog, weights=w, coefficients=[beta, b], values=values, exact=True)
print("fit:", {k: round(float(v), 4) for k, v in zip(inf.labels, inf.coefficients)})
inf.summary().sort_values("cooks_d", ascending=False).head()

# %% [markdown]
# First-order predictions against the exact refits (red: removal changes the active set;
# logistic loss is smooth, so there are none).

# %%
ax = inf.plot()
ax.set_title("leave-one-out change of (β, b): predicted vs exact")
corr = np.corrcoef(inf.predicted_change.ravel(), inf.exact_change.ravel())[0, 1]
print(f"correlation {corr:.4f}")
assert corr >= 0.99 and not inf.active_set_changed.any()

# %% [markdown]
# The exact refit without the most influential point, checked against CVXPY solving the
# problem without that point.

# %%
top = int(np.argmax(np.linalg.norm(inf.exact_change, axis=1)))
keep = np.arange(N) != top
beta_ref, b_ref = cp.Variable(2), cp.Variable()
margins = cp.multiply(y_data[keep], X_data[keep] @ beta_ref + b_ref)
cp.Problem(cp.Minimize(cp.sum(cp.logistic(-margins)) + lam / 2 * cp.sum_squares(beta_ref))
           ).solve(solver="CLARABEL")
refit = inf.coefficients + inf.exact_change[top]
reference = np.r_[beta_ref.value, b_ref.value]
print("refit without point", top, refit.round(5), "CVXPY:", reference.round(5))
assert np.allclose(refit, reference, atol=1e-5)

# %% [markdown]
# **Data sensitivity.** `data_sensitivity` gives ∂(β, b)/∂xᵢ for every point. The boundary
# near point i, at its projection pᵢ onto the line βᵀx + b = 0, moves along the normal by
# −(δβᵀpᵢ + δb)/‖β‖; the arrow at xᵢ is the direction in which moving the point pushes
# that part of the boundary the most (its gradient), scaled for display.

# %%
arrows_theta = data_sensitivity(inf.solution, X, [beta, b])  # (N, 2, 3)
th, off = inf.coefficients[:2], inf.coefficients[2]
normal = th / np.linalg.norm(th)
proj = X_data - ((X_data @ th + off) / (th @ th))[:, None] * th[None, :]
pull = -(np.einsum("ikj,ij->ik", arrows_theta[:, :, :2], proj) + arrows_theta[:, :, 2])
pull /= np.linalg.norm(th)
assert np.isfinite(pull).all()

# finite-difference check of one point's arrow through re-solves
i, h = top, 1e-5
moved = [X_data.copy(), X_data.copy()]
moved[0][i, 0] += h
moved[1][i, 0] -= h
fd = []
for m in moved:
    s = prog.solve(np.ones(N), m, solver_args={"eps": 1e-10})
    fd.append(np.r_[s.values[0], s.values[1]])
assert np.allclose((fd[0] - fd[1]) / (2 * h), arrows_theta[i, 0], atol=1e-4)

# %%
def boundary(ax, theta, offset, **style):
    xs = np.linspace(X_data[:, 0].min() - 0.5, X_data[:, 0].max() + 0.5, 2)
    ax.plot(xs, -(theta[0] * xs + offset) / theta[1], **style)


strength = np.linalg.norm(inf.derivative, axis=1)
size = 20 + 400 * strength / strength.max()
fig, ax = plt.subplots(figsize=(6.5, 5.5))
ax.scatter(*X_data.T, s=size, c=np.where(y_data > 0, "tab:orange", "tab:blue"), alpha=0.6,
           edgecolors="k", linewidths=0.5)
scale = 0.6 / np.abs(pull).max()
ax.quiver(*X_data.T, *(scale * pull).T, angles="xy", scale_units="xy", scale=1, width=0.004,
          color="0.25")
boundary(ax, th, off, color="k", label="fit on all points")
boundary(ax, refit[:2], refit[2], color="tab:red", linestyle="--",
         label=f"without point {top} (exact refit)")
ax.scatter(*X_data[top], s=600, facecolors="none", edgecolors="tab:red", linewidths=1.5)
ax.set_ylim(X_data[:, 1].min() - 0.5, X_data[:, 1].max() + 0.5)
ax.legend(loc="lower right")
ax.set_title("point size: influence ‖∂θ/∂wᵢ‖; arrows: how moving a point pulls the boundary")

# %% [markdown]
# **Labelled sensitivities.** Any block d(output)/d(parameter) is one call, with names and
# indices: here the fitted intercept and slope against every point's features.

# %%
sens = inf.solution.sensitivity(of=[beta, b], wrt=X)
print(sens.method)
sens.top(5)

# %%
sens.tornado(k=10)
