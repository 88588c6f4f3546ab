"""Learn a polyhedron from projections onto it, with dpplayers' PyTorch layer.

The layer maps a point y to its Euclidean projection onto {x : G x <= h}:

    x*(y; G, h) = argmin_x ||x - y||^2  subject to  G x <= h.

Data are projections onto a hidden polyhedron (G_true, h_true). Starting from a different
polyhedron, gradient descent on G and h (through the layer, by implicit differentiation of
the cone program) recovers a polyhedron that projects the same way. Each step is one
batched solve of 32 projections and one batched vjp. Run: python examples/torch_learn_projection.py
"""

import time

import cvxpy as cp
import torch

from dpplayers.torch import CvxpyLayer

n, m, batch, steps = 2, 5, 32, 125
torch.manual_seed(0)

x, y = cp.Variable(n), cp.Parameter(n)
G, h = cp.Parameter((m, n)), cp.Parameter(m)
problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [G @ x <= h])
layer = CvxpyLayer(problem, parameters=[y, G, h], variables=[x])

# The hidden polyhedron: m random facets at distance ~1 from the origin.
G_true = torch.randn(m, n, dtype=torch.float64)
h_true = torch.ones(m, dtype=torch.float64) + 0.2 * torch.rand(m, dtype=torch.float64)

# Training data: 256 points and their projections onto the hidden polyhedron.
Y = 2 * torch.randn(256, n, dtype=torch.float64)
with torch.no_grad():
    (X,) = layer(Y, G_true, h_true)  # one batched call; G and h broadcast over the batch

# The model's polyhedron starts elsewhere.
G_hat = (G_true + 0.6 * torch.randn(m, n, dtype=torch.float64)).requires_grad_()
h_hat = (0.5 * torch.ones(m, dtype=torch.float64)).requires_grad_()
optimizer = torch.optim.Adam([G_hat, h_hat], lr=0.03)

start = time.perf_counter()
for step in range(steps + 1):
    idx = torch.randint(0, len(Y), (batch,))
    (pred,) = layer(Y[idx], G_hat, h_hat)
    loss = (pred - X[idx]).pow(2).sum(dim=1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 25 == 0:
        print(f"step {step:3d}   loss {loss.item():.2e}")

print(f"{steps} steps of batch {batch} in {time.perf_counter() - start:.1f} s")
