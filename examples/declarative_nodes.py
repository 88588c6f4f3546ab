# %% [markdown]
# # Declarative nodes: least squares and projections
#
# A declarative node (Gould et al., "Deep declarative networks") outputs y = argmin_{u ∈ C(x)}
# f(x, u) and gets its gradient from the implicit function theorem on the optimality
# conditions, without unrolling a solver. dpplayers builds such nodes from CVXPY problems. This
# notebook compares three with their closed forms — least squares x* = argmin ‖Ax − b‖², the
# projection onto a Euclidean ball and onto the probability simplex — and shows the projection
# onto an ellipsoid {y : ½(y − c)ᵀE(y − c) ≤ 1}, which has no closed form, checked through its
# optimality conditions instead. Last, a batch of projections onto polytopes with one empty
# polytope among them shows the per-element failure policy: `on_failure="nan"` gives NaN and
# an `INFEASIBLE` status for that element and correct answers for the others.
#
# Speed: forward + backward of the ellipsoid projection is 8.9× faster with dpplayers than with
# cvxpylayers at a batch of 24 (SCS at 1e-8, medians; measured by `benchmarks/gallery.py`,
# figures in `benchmarks/README.md`).
#
# Run as a script: `python examples/declarative_nodes.py` (`QUICK=1` for smaller batches).

# %%
import os

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch

import dpplayers
from dpplayers.torch import CvxpyLayer

QUICK = os.environ.get("QUICK") == "1"
torch.manual_seed(0)
batch = 8 if QUICK else 64
ARGS = {"eps": 1e-10, "refine": 2}


def max_gap(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute entry of the difference."""
    return float((got - want).detach().abs().max())


def gradient_gaps(out: torch.Tensor, ref: torch.Tensor, inputs: list[torch.Tensor],
                  refs: list[torch.Tensor]) -> float:
    """Largest difference of the two pullbacks of one random cotangent."""
    w = torch.randn_like(out)
    g = torch.autograd.grad((out * w).sum(), inputs)
    g_ref = torch.autograd.grad((ref * w).sum(), refs)
    return max(max_gap(a, b) for a, b in zip(g, g_ref))


# %% [markdown]
# ## Least squares
#
# With A (6×3) and b both inputs, the closed form is x* = (AᵀA)⁻¹Aᵀb; torch's `lstsq`
# differentiates it by the formula, the layer by implicit differentiation of the cone program.

# %%
A, b, x = cp.Parameter((6, 3)), cp.Parameter(6), cp.Variable(3)
least_squares = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b))),
                           parameters=[A, b], variables=[x])
A_t = torch.randn(batch, 6, 3, dtype=torch.float64, requires_grad=True)
b_t = torch.randn(batch, 6, dtype=torch.float64, requires_grad=True)
A_r, b_r = A_t.detach().clone().requires_grad_(), b_t.detach().clone().requires_grad_()
(x_star,) = least_squares(A_t, b_t, solver_args=ARGS)
x_ref = torch.linalg.lstsq(A_r, b_r.unsqueeze(-1)).solution.squeeze(-1)
gaps = {"least squares": (max_gap(x_star, x_ref),
                          gradient_gaps(x_star, x_ref, [A_t, b_t], [A_r, b_r]))}

# %% [markdown]
# ## Projections onto a ball and the simplex
#
# Π_ball(z) = z / max(1, ‖z‖/r), and the simplex projection is sparsemax: max(z − τ, 0) with τ
# chosen so that the result sums to one.

# %%
n = 4
z, r, y = cp.Parameter(n), cp.Parameter(nonneg=True), cp.Variable(n)
ball = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(y - z)), [cp.norm(y) <= r]),
                  parameters=[z, r], variables=[y])
simplex = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(y - z)), [y >= 0, cp.sum(y) == 1]),
                     parameters=[z], variables=[y])


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto the probability simplex."""
    s, _ = torch.sort(v, dim=-1, descending=True)
    k = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype)
    size = (1 + k * s > torch.cumsum(s, -1)).sum(-1, keepdim=True)
    active = v >= torch.gather(s, -1, size - 1)
    return torch.clamp(v - ((v * active).sum(-1, keepdim=True) - 1) / size, min=0)


z_t = 1.5 * torch.randn(batch, n, dtype=torch.float64, requires_grad=True)
r_t = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
z_r, r_r = z_t.detach().clone().requires_grad_(), r_t.detach().clone().requires_grad_()
(y_ball,) = ball(z_t, r_t, solver_args=ARGS)
y_ball_ref = z_r / torch.clamp(z_r.norm(dim=1, keepdim=True) / r_r, min=1)
gaps["ball"] = (max_gap(y_ball, y_ball_ref),
                gradient_gaps(y_ball, y_ball_ref, [z_t, r_t], [z_r, r_r]))
(y_simplex,) = simplex(z_t, solver_args=ARGS)
y_simplex_ref = project_simplex(z_r)
gaps["simplex"] = (max_gap(y_simplex, y_simplex_ref),
                   gradient_gaps(y_simplex, y_simplex_ref, [z_t], [z_r]))
for name, (value_gap, gradient_gap) in gaps.items():
    print(f"{name:14s} max |value error| {value_gap:.1e}   max |gradient error| {gradient_gap:.1e}")

# %%
for name, (value_gap, gradient_gap) in gaps.items():
    assert value_gap < 1e-6 and gradient_gap < 1e-6, (name, value_gap, gradient_gap)

# %% [markdown]
# ## Projection onto an ellipsoid
#
# The ellipsoid {y : ½(y − c)ᵀE(y − c) ≤ 1} with E = MᵀM is written `0.5 * sum_squares(M @ y
# - d) <= 1` with inputs M and d = Mc (`M @ (y - c)` would multiply two parameters, which is
# not DPP). For a point z outside, the projection lies on the boundary and z − y* is parallel
# to the normal E(y* − c); the check below measures both. The figure shows points of a circle
# projected onto the ellipse.

# %%
M, d, z2, y2 = cp.Parameter((2, 2)), cp.Parameter(2), cp.Parameter(2), cp.Variable(2)
ellipsoid = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(y2 - z2)),
                                  [0.5 * cp.sum_squares(M @ y2 - d) <= 1]),
                       parameters=[M, d, z2], variables=[y2])
M_t = torch.tensor([[1.0, 0.3], [0.0, 2.0]], dtype=torch.float64)
c_t = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
angles = torch.linspace(0, 2 * np.pi, 25 if QUICK else 61, dtype=torch.float64)[:-1]
points = 3 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
(proj,) = ellipsoid(M_t, M_t @ c_t, points, solver_args=ARGS)
E = M_t.T @ M_t
offset = (proj - c_t).detach()
on_boundary = float((0.5 * torch.einsum("bi,ij,bj->b", offset, E, offset) - 1).abs().max())
normal, step = offset @ E, (points - proj).detach()
cross = float((normal[:, 0] * step[:, 1] - normal[:, 1] * step[:, 0]).abs().max())
print(f"ellipsoid: max |½(y−c)ᵀE(y−c) − 1| = {on_boundary:.1e}, "
      f"max |normal × (z − y)| = {cross:.1e}")
assert on_boundary < 1e-6 and cross < 1e-6
# moving the centre moves the projections: the derivative of their mean with respect to c
(dmean_dc,) = torch.autograd.grad(proj.mean(0)[0], c_t)
print(f"d mean(y₁*) / dc = {dmean_dc.numpy().round(3)}")

# %%
fig, ax = plt.subplots(figsize=(4.5, 4))
t = torch.linspace(0, 2 * np.pi, 200, dtype=torch.float64)
circle = torch.stack([torch.cos(t), torch.sin(t)], 1) * np.sqrt(2)
outline = torch.linalg.solve(M_t, circle.T).T + c_t.detach()  # ½‖M(y − c)‖² = 1
ax.plot(*outline.T, "k-", lw=1, label="ellipsoid")
ax.plot(*points.T, "o", ms=3, color="tab:blue", label="inputs z")
ax.plot(*proj.detach().T, "o", ms=3, color="tab:red", label="projections y*")
for zi, yi in zip(points, proj.detach()):
    ax.plot([zi[0], yi[0]], [zi[1], yi[1]], color="0.7", lw=0.7)
ax.set_aspect("equal")
ax.legend(fontsize=8, loc="upper right")
ax.set_title("projection onto an ellipsoid")
plt.show()

# %% [markdown]
# ## A batch with an empty polytope
#
# The NumPy solution map projects a batch of points onto polytopes {y : Gy ≤ h}. One element's
# h asks for y₁ ≤ −1 and y₁ ≥ 1 at once. With `on_failure="nan"` that element comes back as NaN
# with status `INFEASIBLE`; the others are solved and differentiated as usual (the vjp of the
# failed element is NaN too, so a training loop can mask it).

# %%
w, G, h, v = cp.Parameter(2), cp.Parameter((4, 2)), cp.Parameter(4), cp.Variable(2)
polytope = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(v - w)), [G @ v <= h]),
                             parameters=[w, G, h], variables=[v])
G_box = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
h_batch = np.ones((4, 4))
h_batch[2] = [-1.0, -1.0, 1.0, 1.0]  # y₁ ≤ −1 and −y₁ ≤ −1: empty
w_batch = np.array([[2.0, 0.5], [0.3, -3.0], [0.0, 0.0], [-0.2, 0.1]])
sol = polytope.solve(w_batch, G_box, h_batch, on_failure="nan")
for k, (value, status) in enumerate(zip(sol.values[0], sol.status)):
    print(f"element {k}: y* = {value}, status {status.name}")
(gw, _, _) = sol.vjp(np.ones((4, 2)))
print("vjp with respect to w, per element:\n", gw)

# %%
assert [s.name for s in sol.status] == ["OPTIMAL", "OPTIMAL", "INFEASIBLE", "OPTIMAL"]
assert np.isnan(sol.values[0][2]).all() and np.isnan(gw[2]).all()
others = [0, 1, 3]
np.testing.assert_allclose(sol.values[0][others], np.clip(w_batch[others], -1, 1), atol=1e-6)
