"""The gallery's layers (examples/*.py) timed against cvxpylayers: forward + backward.

Each case rebuilds one example's layer at the batch size of its training step (or of its
check), with parameter values of the same kind, and times one forward and one backward of
``(x * w).sum()`` with dpplayers' PyTorch layer and with cvxpylayers', round-robin so that load
from other jobs hits both alike. Both solve with SCS at eps_abs = eps_rel = 1e-8 (the gallery
itself uses Clarabel for some layers; here the solver is the same for both libraries), and the
figure is the median over rounds. cvxpylayers cannot take ``quad_form(z, Q)`` with a parameter
Q, so its OptNet layer uses ``sum_squares(L @ z)`` with a factor L of Q (the same QP).

    python benchmarks/gallery.py                  # every case, 9 rounds (a few minutes)
    python benchmarks/gallery.py --rounds 3 mpc   # some cases (the JAX case runs with all)
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

import dpplayers.torch

ARGS = {"eps": 1e-8, "max_iters": 100_000}


@dataclass(frozen=True)
class Case:
    """One example's layer: its problem (ours, cvxpylayers'), parameters and values."""

    example: str
    batch: int
    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[cp.Variable]
    values: list[torch.Tensor]
    theirs: tuple[cp.Problem, list, list, list[torch.Tensor]] | None = None  # if it differs


def t(a: np.ndarray) -> torch.Tensor:
    """A float64 tensor that requires grad."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def sparsemax(rng: np.random.Generator) -> Case:
    """Sparsemax: the projection onto the simplex."""
    x, y = cp.Parameter(5), cp.Variable(5)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(y - x)), [cp.sum(y) == 1, y >= 0])
    return Case("argmin_operations.py", 64, problem, [x], [y],
                [t(2 * rng.standard_normal((64, 5)))])


def softmax(rng: np.random.Generator) -> Case:
    """Softmax: the negative-entropy problem on the simplex."""
    x, y = cp.Parameter(5), cp.Variable(5)
    problem = cp.Problem(cp.Minimize(-x @ y - cp.sum(cp.entr(y))), [cp.sum(y) == 1])
    return Case("argmin_operations.py", 64, problem, [x], [y],
                [t(2 * rng.standard_normal((64, 5)))])


def optnet_box(rng: np.random.Generator) -> Case:
    """The OptNet QP with a box, Q and q parameters (cvxpylayers: a factor of Q)."""
    k = 4
    M = rng.standard_normal((k, k))
    Q_value = M @ M.T + 0.5 * np.eye(k)
    Q, q, z = cp.Parameter((k, k), PSD=True), cp.Parameter(k), cp.Variable(k)
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [cp.abs(z) <= 1])
    L = cp.Parameter((k, k))
    theirs = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L @ z) + q @ z), [cp.abs(z) <= 1])
    q_value = t(2 * rng.standard_normal((64, k)))
    return Case("optnet_qp.py", 64, problem, [Q, q], [z], [t(Q_value), q_value],
                (theirs, [L, q], [z], [t(np.linalg.cholesky(Q_value).T), q_value]))


def tv(rng: np.random.Generator) -> Case:
    """TV denoising with per-difference weights."""
    N = 40
    y, w, x = cp.Parameter(N), cp.Parameter(N - 1, nonneg=True), cp.Variable(N)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - y) + w @ cp.abs(cp.diff(x))))
    signal = np.repeat(rng.standard_normal((32, 5)), 8, axis=1)
    return Case("tv_denoising.py", 32, problem, [y, w], [x],
                [t(signal + 0.3 * rng.standard_normal(signal.shape)), t(np.full(N - 1, 0.4))])


def mpc(rng: np.random.Generator) -> Case:
    """The constrained MPC of the double integrator, x₀ and θ parameters."""
    T, dt = 10, 0.2
    x0, theta = cp.Parameter(2), cp.Parameter()
    x, u = cp.Variable((2, T + 1)), cp.Variable(T)
    constraints = [x[:, 0] == x0, cp.abs(u) <= 1, x[0, 1:] == x[0, :-1] + dt * x[1, :-1],
                   x[1, 1:] == theta * x[1, :-1] + dt * u]
    cost = cp.sum_squares(x[0]) + 0.1 * cp.sum_squares(x[1]) + 0.1 * cp.sum_squares(u)
    return Case("differentiable_mpc.py", 60, cp.Problem(cp.Minimize(cost), constraints),
                [x0, theta], [u], [t(rng.standard_normal((60, 2))), t(np.array(0.9))])


def lml(rng: np.random.Generator) -> Case:
    """The limited multi-label projection (k = 2)."""
    x, y = cp.Parameter(6), cp.Variable(6)
    problem = cp.Problem(cp.Minimize(-x @ y - cp.sum(cp.entr(y) + cp.entr(1 - y))),
                         [cp.sum(y) == 2])
    return Case("topk_and_transport.py", 32, problem, [x], [y],
                [t(1.5 * rng.standard_normal((32, 6)))])


def transport(rng: np.random.Generator) -> Case:
    """Entropic optimal transport, 4 × 5, γ = 2."""
    M, r, c = cp.Parameter((4, 5)), cp.Parameter(4, nonneg=True), cp.Parameter(5, nonneg=True)
    P = cp.Variable((4, 5))
    problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(M, P)) - cp.sum(cp.entr(P)) / 2),
                         [cp.sum(P, axis=1) == r, cp.sum(P, axis=0)[:-1] == c[:-1]])
    return Case("topk_and_transport.py", 1, problem, [M, r, c], [P],
                [t(rng.random((4, 5))), t(np.full(4, 0.25)), t(np.full(5, 0.2))])


def logistic(rng: np.random.Generator) -> Case:
    """Regularised logistic regression, λ the parameter."""
    X, y = rng.standard_normal((25, 15)), np.sign(rng.standard_normal(25))
    lam, theta = cp.Parameter(nonneg=True), cp.Variable(15)
    margins = cp.multiply(y, X @ theta)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-margins))
                                     + lam * cp.sum_squares(theta)))
    return Case("svm_logistic_bilevel.py", 1, problem, [lam], [theta], [t(np.array(1.0))])


def svm(rng: np.random.Generator) -> Case:
    """The soft-margin SVM, C the parameter."""
    X, y = rng.standard_normal((25, 15)), np.sign(rng.standard_normal(25))
    C, theta = cp.Parameter(nonneg=True), cp.Variable(15)
    margins = cp.multiply(y, X @ theta)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(theta)
                                     + C * cp.sum(cp.pos(1 - margins))))
    return Case("svm_logistic_bilevel.py", 1, problem, [C], [theta], [t(np.array(1.0))])


def shortest_path(rng: np.random.Generator) -> Case:
    """The quadratically smoothed shortest path on a 4×4 grid."""
    side = 4
    nodes = {(i, j): side * i + j for i in range(side) for j in range(side)}
    edges = [(nodes[i, j], nodes[i + di, j + dj]) for (i, j) in nodes
             for di, dj in ((0, 1), (1, 0)) if (i + di, j + dj) in nodes]
    incidence = np.zeros((len(nodes), len(edges)))
    for e, (a, b) in enumerate(edges):
        incidence[a, e], incidence[b, e] = -1.0, 1.0
    supply = np.zeros(len(nodes))
    supply[0], supply[-1] = -1.0, 1.0
    c, x = cp.Parameter(len(edges)), cp.Variable(len(edges))
    problem = cp.Problem(cp.Minimize(c @ x + 0.5 * cp.sum_squares(x)),
                         [incidence @ x == supply, x >= 0, x <= 1])
    return Case("decision_focused.py", 32, problem, [c], [x],
                [t(1 + rng.random((32, len(edges))))])


def ellipsoid(rng: np.random.Generator) -> Case:
    """Projections of a circle's points onto an ellipse."""
    M, d, z, y = cp.Parameter((2, 2)), cp.Parameter(2), cp.Parameter(2), cp.Variable(2)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(y - z)),
                         [0.5 * cp.sum_squares(M @ y - d) <= 1])
    angles = np.linspace(0, 2 * np.pi, 25)[:-1]
    return Case("declarative_nodes.py", 24, problem, [M, d, z], [y],
                [t(np.array([[1.0, 0.3], [0.0, 2.0]])), t(np.array([0.24, -0.4])),
                 t(3 * np.stack([np.cos(angles), np.sin(angles)], 1))])


def relaxed_topk(rng: np.random.Generator) -> Case:
    """The relaxed top-3 of 12 Gumbel-perturbed utilities."""
    U, x = cp.Parameter(12), cp.Variable(12)
    problem = cp.Problem(cp.Maximize(U @ x - 0.25 * cp.sum_squares(x)),
                         [x >= 0, x <= 1, cp.sum(x) == 3])
    return Case("stochastic_topk.py", 16, problem, [U], [x], [t(rng.gumbel(size=(16, 12)))])


def sudoku(rng: np.random.Generator) -> Case:
    """The Sudoku QP with learned equality constraints."""
    A, b, p, z = cp.Parameter((40, 64)), cp.Parameter(40), cp.Parameter(64), cp.Variable(64)
    problem = cp.Problem(cp.Minimize(0.05 * cp.sum_squares(z) - p @ z), [A @ z == b, z >= 0])
    A_value = rng.random((40, 64))
    return Case("sudoku.py", 32, problem, [A, b, p], [z],
                [t(A_value), t(A_value @ np.full(64, 0.5)),
                 t((rng.random((32, 64)) < 0.125).astype(float))])


CASES: dict[str, Callable[[np.random.Generator], Case]] = {
    "sparsemax": sparsemax, "softmax": softmax, "optnet_box": optnet_box, "tv": tv, "mpc": mpc,
    "lml": lml, "transport": transport, "logistic": logistic, "svm": svm,
    "shortest_path": shortest_path, "ellipsoid": ellipsoid, "relaxed_topk": relaxed_topk,
    "sudoku": sudoku,
}


def fwd_bwd(layer: Callable, values: list[torch.Tensor], weights: torch.Tensor,
            round_: int) -> float:
    """Seconds for one forward and one backward of a random linear functional, at the values
    scaled by 1 + 10⁻³·round_ (fresh inputs each round, as in training; scaling keeps them
    feasible)."""
    values = [(v.detach() * (1 + 1e-3 * round_)).requires_grad_() for v in values]
    start = time.perf_counter()
    (out,) = layer(*values, solver_args=ARGS)
    (out * weights).sum().backward()
    return time.perf_counter() - start


def run(name: str, rounds: int) -> tuple[str, int, float, float]:
    """(example, batch, dpplayers' median seconds, cvxpylayers' median seconds)."""
    import cvxpylayers.torch

    case = CASES[name](np.random.default_rng(0))
    problem, parameters, variables, values = case.theirs or (
        case.problem, case.parameters, case.variables, case.values)
    ours = dpplayers.torch.CvxpyLayer(case.problem, parameters=case.parameters,
                                      variables=case.variables)
    theirs = cvxpylayers.torch.CvxpyLayer(problem, parameters=parameters, variables=variables)
    with torch.no_grad():
        (out,) = ours(*case.values, solver_args=ARGS)
    weights = torch.randn(out.shape, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(rounds + 1):  # the first round warms both up and is dropped
            times["ours"].append(fwd_bwd(ours, case.values, weights, k))
            times["theirs"].append(fwd_bwd(theirs, values, weights, k))
    return (case.example, case.batch, statistics.median(times["ours"][1:]),
            statistics.median(times["theirs"][1:]))


def run_jax(rounds: int) -> tuple[float, float]:
    """The TV layer of ``jax_gallery.py`` in JAX: dpplayers' gradient under ``jax.jit``
    against cvxpylayers' (eager: its JAX layer cannot be traced by ``jax.jit``), in seconds."""
    import cvxpylayers.jax
    import jax
    import jax.numpy as jnp

    import dpplayers.jax

    jax.config.update("jax_enable_x64", True)
    case = tv(np.random.default_rng(0))
    y0, w0 = (jnp.asarray(v.detach().numpy()) for v in case.values)
    weights = jnp.asarray(np.random.default_rng(1).standard_normal(y0.shape))

    def gradient(layer: Callable) -> Callable:
        def loss(y: jax.Array, w: jax.Array) -> jax.Array:
            return jnp.sum(layer(y, w, solver_args=ARGS)[0] * weights)
        return jax.grad(loss, argnums=(0, 1))

    ours = jax.jit(gradient(dpplayers.jax.CvxpyLayer(case.problem, case.parameters,
                                                      case.variables)))
    theirs = gradient(cvxpylayers.jax.CvxpyLayer(case.problem, parameters=case.parameters,
                                                 variables=case.variables))
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(rounds + 1):
            for name, fn in (("ours", ours), ("theirs", theirs)):
                start = time.perf_counter()
                jax.block_until_ready(fn(y0 * (1 + 1e-3 * k), w0 * (1 + 1e-3 * k)))
                times[name].append(time.perf_counter() - start)
    return statistics.median(times["ours"][1:]), statistics.median(times["theirs"][1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX case")
    options = parser.parse_args()
    unknown = set(options.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    torch.set_num_threads(1)
    print("| layer | example | batch | dpplayers fwd+bwd (ms) | cvxpylayers fwd+bwd (ms) | "
          "speed-up |\n|---|---|---|---|---|---|")
    for name in options.cases or CASES:
        example, batch, ours, theirs = run(name, options.rounds)
        print(f"| {name} | `{example}` | {batch} | {1e3 * ours:.1f} | {1e3 * theirs:.1f} | "
              f"{theirs / ours:.1f}× |", flush=True)
    if not options.no_jax and not options.cases:
        ours, theirs = run_jax(options.rounds)
        print(f"| tv (JAX: ours jitted, theirs eager) | `jax_gallery.py` | 32 | {1e3 * ours:.1f} | "
              f"{1e3 * theirs:.1f} | {theirs / ours:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
