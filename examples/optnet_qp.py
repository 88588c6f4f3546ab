"""The OptNet QP layer, written as in the OptNet talk, with dpplayers.

    z* = argmin ½ zᵀQz + qᵀz  s.t.  Az = b,  Gz ≤ h,   with Q, q, A, b, G, h all learned.

`cp.quad_form(z, Q)` with a parameter Q is not DPP in plain CVXPY (cvxpylayers needs a
factor L and `sum_squares(L @ z)` on its default path); dpplayers takes Q directly and
differentiates exactly with respect to it. The script solves a batch, backpropagates to all
six parameters, and checks dL/dQ against central finite differences.
"""

import cvxpy as cp
import torch

from dpplayers.torch import CvxpyLayer

torch.manual_seed(0)
n, m, p, batch = 10, 3, 6, 8

Q = cp.Parameter((n, n), PSD=True)
q = cp.Parameter(n)
A = cp.Parameter((m, n))
b = cp.Parameter(m)
G = cp.Parameter((p, n))
h = cp.Parameter(p)
z = cp.Variable(n)
prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [A @ z == b, G @ z <= h])
layer = CvxpyLayer(prob, parameters=[Q, q, A, b, G, h], variables=[z])

L = torch.randn(n, n, dtype=torch.float64)
Q_t = (L @ L.T / n + torch.eye(n, dtype=torch.float64)).requires_grad_()
q_t = torch.randn(batch, n, dtype=torch.float64, requires_grad=True)
A_t = torch.randn(m, n, dtype=torch.float64, requires_grad=True)
z0 = torch.randn(n, dtype=torch.float64)
b_t = (A_t @ z0).detach().requires_grad_()
G_t = torch.randn(p, n, dtype=torch.float64, requires_grad=True)
h_t = (G_t @ z0 + 0.5).detach().requires_grad_()

args = {"eps": 1e-10, "refine": 2}
z_star, = layer(Q_t, q_t, A_t, b_t, G_t, h_t, solver_args=args)
loss = (z_star ** 2).sum()
loss.backward()
print(f"solved a batch of {batch}: z* shape {tuple(z_star.shape)}, loss {loss.item():.6f}")
for name, t in zip(["Q", "q", "A", "b", "G", "h"], (Q_t, q_t, A_t, b_t, G_t, h_t)):
    print(f"  dL/d{name}: shape {tuple(t.grad.shape)}, norm {t.grad.norm().item():.4f}")
print(f"  dL/dQ is symmetric: {torch.allclose(Q_t.grad, Q_t.grad.T)}")

# finite-difference check of dL/dQ along a symmetric direction
D = torch.randn(n, n, dtype=torch.float64)
D = (D + D.T) / 2
eps = 1e-5
with torch.no_grad():
    def f(t):
        out, = layer(Q_t + t * D, q_t, A_t, b_t, G_t, h_t, solver_args=args)
        return (out ** 2).sum().item()

    fd = (f(eps) - f(-eps)) / (2 * eps)
analytic = (Q_t.grad * D).sum().item()
print(f"  directional derivative in Q: analytic {analytic:.8f}, finite differences {fd:.8f}")
