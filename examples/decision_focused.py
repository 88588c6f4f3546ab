# %% [markdown]
# # Decision-focused learning: predict, then optimise a shortest path
#
# Predict-then-optimise: edge costs c of a graph are unknown, predicted from features z by a
# model ĉ = Wz, and the decision is the shortest path under ĉ. The *two-stage* approach fits
# W to the costs (least squares) and hopes good predictions give good paths. The
# *decision-focused* approach trains W on what matters — the true cost of the chosen path —
# by differentiating through the optimisation. The path LP's solution is piecewise constant
# in ĉ (zero gradient), so training uses the smoothed layer
#
#     x*(ĉ) = argmin_x ĉᵀx + (γ/2)‖x‖²  s.t.  x a unit flow from source to sink, 0 ≤ x ≤ 1,
#
# (quadratic smoothing, Wilder et al. 2019), and evaluation uses exact shortest paths. The
# costs depend on the features through a 6th-degree polynomial, so the linear model is
# misspecified: the fit that predicts costs best in least squares is not the one that picks
# the best paths, and decision-focused training reduces the regret (true cost of the chosen
# path over the best path's, minus one).
#
# Speed: forward + backward of the smoothed shortest-path layer is 1.4× faster with dpplayers
# than with cvxpylayers at a batch of 32 (SCS at 1e-8, medians; measured by
# `benchmarks/gallery.py`, figures in `benchmarks/README.md`).
#
# Run as a script: `python examples/decision_focused.py` (`QUICK=1` for fewer steps).

# %%
import itertools
import os

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch

from dpplayers.torch import CvxpyLayer

QUICK = os.environ.get("QUICK") == "1"
rng = np.random.default_rng(0)
torch.manual_seed(0)
side, p, degree, gamma = 4, 5, 6, 1.0
steps = 60 if QUICK else 300

# %% [markdown]
# ## The graph
#
# A 4×4 grid; edges go right or down, source top-left, sink bottom-right (24 edges, 20 paths,
# few enough to enumerate for the exact decision).

# %%
nodes = {(i, j): side * i + j for i in range(side) for j in range(side)}
edges = [(nodes[i, j], nodes[i + di, j + dj]) for (i, j) in nodes for di, dj in ((0, 1), (1, 0))
         if (i + di, j + dj) in nodes]
incidence = np.zeros((len(nodes), len(edges)))
for e, (u, v) in enumerate(edges):
    incidence[u, e], incidence[v, e] = -1.0, 1.0
supply = np.zeros(len(nodes))
supply[0], supply[-1] = -1.0, 1.0


def all_paths() -> np.ndarray:
    """Edge-indicator vectors of every monotone source-to-sink path."""
    paths = []
    for downs in itertools.combinations(range(2 * (side - 1)), side - 1):
        node, path = 0, np.zeros(len(edges))
        for step in range(2 * (side - 1)):
            nxt = node + (side if step in downs else 1)
            path[edges.index((node, nxt))] = 1
            node = nxt
        paths.append(path)
    return np.array(paths)


PATHS = torch.tensor(all_paths())
print(f"{len(edges)} edges, {len(PATHS)} paths")

# %% [markdown]
# ## Data
#
# cₑ = (1 + ((Bz)ₑ/√p + 3)^6 / 3.5^6) · εₑ with B a fixed 0/1 matrix and multiplicative noise
# ε ~ U[0.9, 1.1]. The model sees the features and a constant 1 (an intercept).

# %%
B = (rng.random((len(edges), p)) < 0.5).astype(float)


def data(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (with a trailing 1) and true edge costs."""
    z = rng.standard_normal((count, p))
    c = (1 + (z @ B.T / np.sqrt(p) + 3) ** degree / 3.5**degree)
    features = np.hstack([z, np.ones((count, 1))])
    return torch.tensor(features), torch.tensor(c * rng.uniform(0.9, 1.1, c.shape))


z_train, c_train = data(200)
z_test, c_test = data(500)

# %% [markdown]
# ## The smoothed shortest-path layer

# %%
c_hat, x = cp.Parameter(len(edges)), cp.Variable(len(edges))
path_layer = CvxpyLayer(
    cp.Problem(cp.Minimize(c_hat @ x + gamma / 2 * cp.sum_squares(x)),
               [incidence @ x == supply, x >= 0, x <= 1]),
    parameters=[c_hat], variables=[x])


def regret(W: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> float:
    """Mean normalised regret of exact shortest paths under the predicted costs."""
    chosen = PATHS[(z @ W.T @ PATHS.T).argmin(1)]
    best = (c @ PATHS.T).min(1).values
    return float(((chosen * c).sum(1) / best - 1).mean())


# %% [markdown]
# ## Two-stage: least squares on the costs

# %%
W_two_stage = torch.linalg.lstsq(z_train, c_train).solution.T.contiguous()
print(f"two-stage: test regret {regret(W_two_stage, z_test, c_test):.3f}")

# %% [markdown]
# ## Decision-focused: the true cost of the smoothed decision
#
# Starting from the two-stage model, Adam minimises the mean true cost cᵀx*(Wz) over
# minibatches of 32 (the smoothing term is not part of the loss).

# %%
W = W_two_stage.clone().requires_grad_()
optimizer = torch.optim.Adam([W], lr=0.05)
history = []
for step in range(steps):
    idx = torch.randint(0, len(z_train), (32,))
    (decision,) = path_layer(z_train[idx] @ W.T)
    loss = (decision * c_train[idx]).sum(1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 10 == 0 or step == steps - 1:
        history.append((step, regret(W.detach(), z_test, c_test)))
two_stage, decision_focused = regret(W_two_stage, z_test, c_test), history[-1][1]
print(f"decision-focused: test regret {decision_focused:.3f} "
      f"({two_stage / decision_focused:.1f}× lower than two-stage)")

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(*zip(*history), "o-", ms=3, label="decision-focused")
ax.axhline(two_stage, color="tab:red", label="two-stage (least squares)")
ax.set(xlabel="training step", ylabel="test regret", title="shortest path on a 4×4 grid")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Decision-focused training must lower the test regret of the two-stage model by a factor
# of 1.4 (QUICK) or 1.6 (full run).

# %%
assert two_stage / decision_focused > (1.4 if QUICK else 1.6), (two_stage, decision_focused)
