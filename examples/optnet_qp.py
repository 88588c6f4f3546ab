# %% [markdown]
# # The OptNet QP layer
#
# OptNet (Amos & Kolter 2017) is the layer
#
#     z*(Q, q, A, b, G, h) = argmin_z ½ zᵀQz + qᵀz  s.t.  Az = b,  Gz ≤ h,
#
# with every one of Q, q, A, b, G, h a possible input or learned weight. `cp.quad_form(z, Q)`
# with a parameter Q is not DPP in plain CVXPY (cvxpylayers needs a factor L and
# `sum_squares(L @ z)`); dpplayers takes Q directly and differentiates exactly with respect to
# it. This notebook first backpropagates through a batch to all six parameters and checks
# dL/dQ against central finite differences, then learns a hidden Q from input–solution pairs
# alone and shows the learned matrix beside the true one.
#
# Speed: forward + backward of the 4×4 box-constrained QP is 3.8× faster with dpplayers than
# with cvxpylayers (written with a factor of Q) at a batch of 64 (SCS at 1e-8, medians; measured
# by `benchmarks/gallery.py`, figures in `benchmarks/README.md`).
#
# Run as a script: `python examples/optnet_qp.py` (`QUICK=1` for fewer training steps).

# %%
import os

import cvxpy as cp
import matplotlib.pyplot as plt
import torch

from dpplayers.torch import CvxpyLayer

QUICK = os.environ.get("QUICK") == "1"
torch.manual_seed(0)
n, m, p, batch = 10, 3, 6, 8

# %%
Q = cp.Parameter((n, n), PSD=True)
q = cp.Parameter(n)
A = cp.Parameter((m, n))
b = cp.Parameter(m)
G = cp.Parameter((p, n))
h = cp.Parameter(p)
z = cp.Variable(n)
prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [A @ z == b, G @ z <= h])
layer = CvxpyLayer(prob, parameters=[Q, q, A, b, G, h], variables=[z])

# %% [markdown]
# ## Gradients to all six parameters
#
# A batch of 8 linear terms q (the other parameters are shared), a feasible point z0 for the
# constraints, and the loss ‖z*‖².

# %%
L = torch.randn(n, n, dtype=torch.float64)
Q_t = (L @ L.T / n + torch.eye(n, dtype=torch.float64)).requires_grad_()
q_t = torch.randn(batch, n, dtype=torch.float64, requires_grad=True)
A_t = torch.randn(m, n, dtype=torch.float64, requires_grad=True)
z0 = torch.randn(n, dtype=torch.float64)
b_t = (A_t @ z0).detach().requires_grad_()
G_t = torch.randn(p, n, dtype=torch.float64, requires_grad=True)
h_t = (G_t @ z0 + 0.5).detach().requires_grad_()

args = {"eps": 1e-10, "refine": 2}
(z_star,) = layer(Q_t, q_t, A_t, b_t, G_t, h_t, solver_args=args)
loss = (z_star**2).sum()
loss.backward()
print(f"solved a batch of {batch}: z* shape {tuple(z_star.shape)}, loss {loss.item():.6f}")
for name, t in zip(["Q", "q", "A", "b", "G", "h"], (Q_t, q_t, A_t, b_t, G_t, h_t)):
    print(f"  dL/d{name}: shape {tuple(t.grad.shape)}, norm {t.grad.norm().item():.4f}")


# %%
def loss_along(t: float, direction: torch.Tensor) -> float:
    """The loss at Q + t·direction (no gradient)."""
    with torch.no_grad():
        (out,) = layer(Q_t + t * direction, q_t, A_t, b_t, G_t, h_t, solver_args=args)
    return (out**2).sum().item()


D = torch.randn(n, n, dtype=torch.float64)
D = (D + D.T) / 2  # a symmetric direction
eps = 1e-5
fd = (loss_along(eps, D) - loss_along(-eps, D)) / (2 * eps)
analytic = (Q_t.grad * D).sum().item()
print(f"directional derivative in Q: analytic {analytic:.8f}, finite differences {fd:.8f}")
assert abs(analytic - fd) <= 1e-5 * max(1.0, abs(fd))
assert torch.allclose(Q_t.grad, Q_t.grad.T), "dL/dQ should be symmetric"

# %% [markdown]
# ## Learning Q from data
#
# A hidden QP with Q_true (4×4) and a box −1 ≤ z ≤ 1 (as G z ≤ h) maps inputs q to solutions
# z*. From 64 such pairs alone, we fit Q = LLᵀ + 0.1·I (so that it stays positive definite)
# by Adam on the mean squared error of the layer's solutions. Q is identifiable because most
# samples leave some coordinates off the box, where z* depends on Q through its inverse.

# %%
k, samples = 4, 64
steps = 60 if QUICK else 300
Qk, qk = cp.Parameter((k, k), PSD=True), cp.Parameter(k)
zk = cp.Variable(k)
box = cp.Problem(cp.Minimize(0.5 * cp.quad_form(zk, Qk) + qk @ zk), [cp.abs(zk) <= 1])
qp = CvxpyLayer(box, parameters=[Qk, qk], variables=[zk])

M = torch.randn(k, k, dtype=torch.float64)
Q_true = M @ M.T + 0.5 * torch.eye(k, dtype=torch.float64)
inputs = 2 * torch.randn(samples, k, dtype=torch.float64)
with torch.no_grad():
    (targets,) = qp(Q_true, inputs)

factor = torch.eye(k, dtype=torch.float64).requires_grad_()  # start from Q = 1.1·I
optimizer = torch.optim.Adam([factor], lr=0.05)
history = []
for step in range(steps):
    Q_hat = factor @ factor.T + 0.1 * torch.eye(k, dtype=torch.float64)
    (pred,) = qp(Q_hat, inputs)
    mse = (pred - targets).pow(2).sum(1).mean()
    optimizer.zero_grad()
    mse.backward()
    optimizer.step()
    history.append(mse.item())
Q_hat = (factor @ factor.T + 0.1 * torch.eye(k, dtype=torch.float64)).detach()
relative_error = ((Q_hat - Q_true).norm() / Q_true.norm()).item()
print(f"MSE {history[0]:.3e} -> {history[-1]:.3e} in {steps} steps; "
      f"‖Q̂ − Q_true‖/‖Q_true‖ = {relative_error:.1e}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
axes[0].semilogy(history)
axes[0].set(xlabel="Adam step", title="training MSE")
scale = Q_true.abs().max().item()
for ax, matrix, title in ((axes[1], Q_true, "Q_true"), (axes[2], Q_hat, "learned Q")):
    image = ax.imshow(matrix, cmap="RdBu", vmin=-scale, vmax=scale)
    ax.set(title=title, xticks=[], yticks=[])
fig.colorbar(image, ax=axes[1:].tolist())
plt.show()

# %%
# QUICK: a 100-fold fall and Q within 30 %; full run: 10⁶-fold and within 0.1 %
assert history[-1] < history[0] / (1e2 if QUICK else 1e6), "the loss should fall"
assert relative_error < (0.3 if QUICK else 1e-3), "Q_true should be recovered"
